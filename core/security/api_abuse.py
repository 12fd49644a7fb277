"""API abuse: request rates per key and per IP against each one's own EWMA baseline, bursts
of 401/403/429 answers, and enumeration (consecutive ids, or many distinct paths that 404).

Counting is one grouped query per window over whole buckets; the baselines are updated in
time order from those counts, one row per key in `security_baselines`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.security.findings import Finding, judge_buckets, merge_by_window, record_findings
from models.config import EventopsConfig

DETECTOR = "api_abuse"

# Key (api key or IP) per bucket: requests, error answers, ids under one path, 404 paths.
_COUNTS = """
    WITH r AS (
        SELECT date_bin(%(bucket)s, at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b,
               k.key, status, path
        FROM security_events AS e
        CROSS JOIN LATERAL (
            VALUES ('ip:' || host(e.ip)), ('key:' || e.api_key)
        ) AS k(key)
        WHERE e.stream = 'api' AND e.at >= %(since)s AND e.at < %(until)s AND k.key IS NOT NULL
          AND (e.ip IS NULL OR NOT (e.ip <<= ANY(%(ignore)s::cidr[])))
    )
    SELECT key, b, count(*) AS requests,
           count(*) FILTER (WHERE status = ANY(%(errors)s)) AS errors,
           count(DISTINCT path) FILTER (WHERE status = 404) AS not_found_paths,
           (array_agg(DISTINCT path) FILTER (WHERE status = 404))[1:5] AS sample_not_found
    FROM r GROUP BY key, b ORDER BY b, key
"""

# Numeric ids under one path prefix (/api/vendors/17), per key and bucket.
_IDS = """
    WITH r AS (
        SELECT date_bin(%(bucket)s, at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b,
               k.key, regexp_match(path, '^([^?#]*/)([0-9]{1,18})(?:[/?#]|$)') AS m
        FROM security_events AS e
        CROSS JOIN LATERAL (
            VALUES ('ip:' || host(e.ip)), ('key:' || e.api_key)
        ) AS k(key)
        WHERE e.stream = 'api' AND e.at >= %(since)s AND e.at < %(until)s AND k.key IS NOT NULL
          AND (e.ip IS NULL OR NOT (e.ip <<= ANY(%(ignore)s::cidr[])))
    )
    SELECT key, b, m[1] AS prefix, count(DISTINCT m[2]::int8) AS ids,
           min(m[2]::int8) AS lo, max(m[2]::int8) AS hi
    FROM r WHERE m IS NOT NULL
    GROUP BY key, b, m[1]
    HAVING count(DISTINCT m[2]::int8) >= %(min_ids)s
"""


def detect(
    session: Session, app_config: EventopsConfig, since: datetime, until: datetime, now: datetime
) -> dict[str, Any]:
    """Judge the whole buckets in [since, until)."""
    config = app_config.security.api_abuse
    params = {
        "bucket": config.bucket,
        "since": since,
        "until": until,
        "ignore": list(config.ignoreip),
        "errors": list(config.error_statuses),
        "min_ids": config.enumeration_ids,
    }
    conn = session.connection()
    rows = list(conn.exec_driver_sql(_COUNTS, params))
    findings: list[Finding] = []
    flagged = judge_buckets(
        session,
        "api_rate",
        [(r.key, r.b, float(r.requests)) for r in rows],
        config.bucket,
        config.ewma_alpha,
        config.z_threshold,
        config.min_requests,
        config.min_stddev,
        config.warmup_buckets,
        config.new_key_requests,
    )
    minutes = f"{config.bucket.total_seconds() / 60:g} min"
    for key, bucket, value, mean, z in flagged:
        findings.append(
            Finding(
                detector=DETECTOR,
                kind="request_rate",
                severity="warning",
                subject=key,
                summary=f"{key} made {value:.0f} requests in {minutes} "
                f"(baseline {mean:.1f}, z={z:.1f})",
                window_start=bucket,
                window_end=bucket + config.bucket,
                evidence={"requests": value, "baseline_mean": mean, "z": z},
            )
        )
    for r in rows:
        if r.errors >= config.error_burst:
            findings.append(
                Finding(
                    detector=DETECTOR,
                    kind="auth_error_burst",
                    severity="warning",
                    subject=r.key,
                    summary=f"{r.key} got {r.errors} answers {config.error_statuses} "
                    f"in {minutes} ({r.requests} requests)",
                    window_start=r.b,
                    window_end=r.b + config.bucket,
                    evidence={"errors": r.errors, "requests": r.requests},
                )
            )
        if r.not_found_paths >= config.enumeration_not_found:
            findings.append(
                _enumeration(
                    config.bucket,
                    r.key,
                    r.b,
                    {
                        "not_found_paths": r.not_found_paths,
                        "sample_paths": r.sample_not_found,
                        "requests": r.requests,
                    },
                    f"{r.not_found_paths} distinct paths answered 404 in {minutes}",
                )
            )
    for r in conn.exec_driver_sql(_IDS, params):
        span = r.hi - r.lo + 1
        # Consecutive-ish: the ids asked for cover at least half of their range.
        if r.ids * 2 >= span:
            findings.append(
                _enumeration(
                    config.bucket,
                    r.key,
                    r.b,
                    {
                        "prefix": r.prefix,
                        "distinct_ids": r.ids,
                        "lowest_id": r.lo,
                        "highest_id": r.hi,
                    },
                    f"{r.ids} consecutive ids under {r.prefix} ({r.lo}..{r.hi}) in {minutes}",
                )
            )
    # Enumeration found both ways in one bucket is one enumeration.
    unique: dict[tuple[str, str, datetime], Finding] = {}
    for finding in findings:
        unique.setdefault((finding.kind, finding.subject, finding.window_start), finding)
    merged = merge_by_window(list(unique.values()))
    results = record_findings(session, merged, app_config, now)
    return {"findings": sum(1 for _, new in results if new), "keys": len({r.key for r in rows})}


def _enumeration(
    bucket: Any, key: str, at: datetime, evidence: dict[str, Any], what: str
) -> Finding:
    return Finding(
        detector=DETECTOR,
        kind="enumeration",
        severity="warning",
        subject=key,
        summary=f"enumeration by {key}: {what}",
        window_start=at,
        window_end=at + bucket,
        evidence=evidence,
    )
