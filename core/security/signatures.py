"""Malicious activity: known attack signatures in request paths (SQL injection, XSS, path
traversal, probes for well-known sensitive files) and scanner user agents.

Paths are matched after decoding the percent-escapes attackers use to slip past naive
filters (%27, %3C, %2e, ...), all in one query; one finding per IP per bucket.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.security.findings import Finding, floor_time, record_findings
from models.config import EventopsConfig

DETECTOR = "signatures"
EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"

# Case-insensitive POSIX regexes (Postgres `~*`) over the decoded path.
BUILTIN: dict[str, str] = {
    "sql_injection": (
        r"(\munion\M.*\mselect\M|'\s*(or|and)\s+'?[a-z0-9_]+'?\s*(=|like)|\mor\s+1\s*=\s*1"
        r"|;\s*(drop|delete|insert|update|alter|truncate)\s|\m(sleep|pg_sleep|benchmark|waitfor)"
        r"\s*\(|'\s*--|\minformation_schema\M)"
    ),
    "xss": (
        r"(<\s*/?\s*script|javascript\s*:|\mon(error|load|mouseover|focus|click)\s*="
        r"|<\s*(img|svg|iframe|body)\M[^>]*(on[a-z]+|src)\s*=|document\.cookie)"
    ),
    "path_traversal": r"(\.\./|\.\.\\|/etc/(passwd|shadow)|/proc/self/|c:\\windows)",
    "recon": (
        r"(/\.(env|git|svn|hg|htaccess|aws|ssh)(/|$|\?)|wp-login\.php|wp-admin|phpmyadmin"
        r"|/server-status|/cgi-bin/|\.php(\?|$)|/actuator(/|$))"
    ),
}
SCANNER_AGENTS = (
    r"(sqlmap|nikto|nmap|masscan|zgrab|nuclei|wpscan|dirbuster|gobuster|feroxbuster|acunetix"
    r"|nessus|openvas|w3af|havij|netsparker|burp|wfuzz|ffuf|jaeles|zmeu)"
)
# Probing categories: an attacker reaching for data or code (critical when it got a 2xx).
ATTACKS = ("sql_injection", "xss", "path_traversal")

_ESCAPES = (
    ("%27", "'"), ("%22", '"'), ("%3c", "<"), ("%3e", ">"), ("%20", " "), ("%2f", "/"),
    ("%2e", "."), ("%3d", "="), ("%28", "("), ("%29", ")"), ("%3b", ";"), ("%5c", "\\"),
    ("%2d", "-"), ("+", " "),
)  # fmt: skip


def decoded(column: str) -> str:
    expression = f"lower({column})"
    for escape, char in _ESCAPES:
        literal = char.replace("'", "''")
        # %% because the query goes to the driver with pyformat parameters.
        expression = f"replace({expression}, '{escape.replace('%', '%%')}', '{literal}')"
    return expression


def patterns(config: EventopsConfig) -> dict[str, str]:
    return {**BUILTIN, **config.security.signatures.extra}


def detect(
    session: Session, app_config: EventopsConfig, since: datetime, until: datetime, now: datetime
) -> dict[str, Any]:
    """Judge the requests in [since, until), whole buckets."""
    config = app_config.security.signatures
    sigs = patterns(app_config)
    names = list(sigs)
    matches = ", ".join(f"d.path_decoded ~* %(sig{i})s AS sig{i}" for i in range(len(names)))
    any_match = " OR ".join(f"sig{i}" for i in range(len(names)))
    params: dict[str, Any] = {
        "bucket": config.bucket,
        "since": since,
        "until": until,
        "agents": config.scanner_agents or SCANNER_AGENTS,
        **{f"sig{i}": sigs[name] for i, name in enumerate(names)},
    }
    rows = session.connection().exec_driver_sql(
        f"""
        WITH d AS (
            SELECT at, host(ip) AS ip, api_key, status, path, user_agent,
                   {decoded("path")} AS path_decoded
            FROM security_events
            WHERE stream = 'api' AND at >= %(since)s AND at < %(until)s
        ), m AS (
            SELECT d.at, d.ip, d.api_key, d.status, d.path, d.user_agent,
                   coalesce(d.user_agent ~* %(agents)s, false) AS scanner,
                   {matches}
            FROM d
        )
        SELECT * FROM m WHERE scanner OR {any_match}
        ORDER BY ip, at
        """,
        params,
    )
    per_ip: dict[tuple[str, datetime], dict[str, Any]] = {}
    for r in rows:
        subject = f"ip:{r.ip}" if r.ip else f"key:{r.api_key}"
        bucket = floor_time(r.at, config.bucket)
        entry = per_ip.setdefault(
            (subject, bucket),
            {
                "requests": 0,
                "signatures": {},
                "samples": [],
                "agents": set(),
                "succeeded": 0,
                "scanner_requests": 0,
                "first_at": r.at,
                "last_at": r.at,
            },
        )
        hit = [name for i, name in enumerate(names) if getattr(r, f"sig{i}")]
        entry["requests"] += 1
        entry["last_at"] = r.at
        for name in hit:
            entry["signatures"][name] = entry["signatures"].get(name, 0) + 1
        if r.scanner:
            entry["scanner_requests"] += 1
            entry["agents"].add(r.user_agent)
        # Only an attack answered 2xx counts: a recon path (/wp-admin) answered 200 is most
        # often a single-page app's catch-all route, not a success.
        if any(name in ATTACKS for name in hit) and 200 <= r.status < 300:
            entry["succeeded"] += 1
        if len(entry["samples"]) < 10:
            entry["samples"].append({"path": r.path, "status": r.status, "signatures": hit})
    findings: list[Finding] = []
    for (subject, bucket), e in per_ip.items():
        sigs_hit: dict[str, int] = e["signatures"]
        if e["succeeded"]:
            severity = "critical"  # an attack request the platform answered with success
        elif sigs_hit:
            severity = "warning"
        else:
            severity = "info"  # a scanner's user agent alone
        kind = max(sigs_hit, key=lambda n: sigs_hit[n]) if sigs_hit else "scanner"
        what = ", ".join(f"{n} x{c}" for n, c in sorted(sigs_hit.items())) or "no signature"
        agents = sorted(a for a in e["agents"] if a)
        findings.append(
            Finding(
                detector=DETECTOR,
                kind=kind,
                severity=severity,
                subject=subject,
                summary=f"attack signatures from {subject}: {what}"
                + (f"; scanner {agents[0]}" if agents else "")
                + (f"; {e['succeeded']} answered 2xx" if e["succeeded"] else ""),
                window_start=bucket,
                window_end=bucket + config.bucket,
                evidence={**e, "agents": agents},
            )
        )
    results = record_findings(session, findings, app_config, now)
    return {"findings": sum(1 for _, new in results if new)}
