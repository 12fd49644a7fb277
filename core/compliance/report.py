"""The monthly security audit report, as Markdown and HTML from one structure.

It gathers the month's incidents, the security findings and bans of the detection duty
(`security_findings`, `security_bans`: read with raw SQL and only if those tables exist, so
the report works with or without that duty), the audit chain's status, the compliance
findings, the breach clocks and the vulnerability scan. Files go to
`<reports_dir>/security-audit-YYYY-MM.{md,html}`.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.audit import audit
from core.compliance.findings import SEVERITY_ORDER, open_findings
from models.compliance import AuditAnchor, AuditEntry, BreachClock, ComplianceRun
from models.tables import Incident

Row = list[str]


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[Row, list[Row]]] = field(default_factory=list)


@dataclass
class Report:
    title: str
    month: str
    sections: list[Section]

    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for section in self.sections:
            lines += [f"## {section.title}", ""]
            for paragraph in section.paragraphs:
                lines += [paragraph, ""]
            for headers, rows in section.tables:
                if not rows:
                    continue
                lines.append("| " + " | ".join(headers) + " |")
                lines.append("|" + "|".join("---" for _ in headers) + "|")
                for row in rows:
                    cells = [cell.replace("|", "\\|").replace("\n", " ") for cell in row]
                    lines.append("| " + " | ".join(cells) + " |")
                lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def html(self) -> str:
        e = html.escape
        parts = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(self.title)}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
            "padding:0 1rem}table{border-collapse:collapse;margin:.5rem 0 1rem}"
            "td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;"
            "vertical-align:top}th{background:#f3f3f3}</style>",
            "</head><body>",
            f"<h1>{e(self.title)}</h1>",
        ]
        for section in self.sections:
            parts.append(f"<h2>{e(section.title)}</h2>")
            parts += [f"<p>{e(p)}</p>" for p in section.paragraphs]
            for headers, rows in section.tables:
                if not rows:
                    continue
                parts.append("<table><thead><tr>")
                parts += [f"<th>{e(h)}</th>" for h in headers]
                parts.append("</tr></thead><tbody>")
                for row in rows:
                    parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
                parts.append("</tbody></table>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """`2026-11` -> [2026-11-01, 2026-12-01) in UTC."""
    try:
        year, number = (int(part) for part in month.split("-"))
        start = datetime(year, number, 1, tzinfo=UTC)
    except ValueError:
        raise ValueError(f"month must look like 2026-11, not {month!r}") from None
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return start, end


def previous_month(now: datetime) -> str:
    first = now.astimezone(UTC).date().replace(day=1)
    last_month = date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1)
    return f"{last_month:%Y-%m}"


def _table_exists(session: Session, name: str) -> bool:
    return bool(session.scalar(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}))


def _guarded(session: Session, query: str, params: dict[str, Any]) -> list[Any] | str:
    """Rows of a raw query on another duty's table, or why they could not be read."""
    try:
        with session.begin_nested():
            return list(session.execute(text(query), params).all())
    except Exception as error:  # a column renamed by that duty: say so, report the rest
        return f"could not be read: {str(error).splitlines()[0]}"


def _fmt(at: datetime | None) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M}" if at else ""


def build_report(session: Session, month: str, now: datetime) -> Report:
    start, end = month_bounds(month)
    span = {"start": start, "end": end}
    sections: list[Section] = []
    summary = Section("Summary")
    sections.append(summary)
    status: list[Row] = []

    # Incidents
    incidents = session.scalars(
        select(Incident)
        .where(Incident.opened_at >= start, Incident.opened_at < end)
        .order_by(Incident.opened_at)
    ).all()
    by_severity: dict[str, int] = {}
    for incident in incidents:
        by_severity[incident.severity] = by_severity.get(incident.severity, 0) + 1
    section = Section("Incidents")
    section.paragraphs.append(
        f"{len(incidents)} incidents opened: "
        + (", ".join(f"{n} {s}" for s, n in sorted(by_severity.items())) or "none")
        + "."
    )
    section.tables.append(
        (
            ["#", "opened (UTC)", "severity", "category", "status", "title"],
            [
                [str(i.id), _fmt(i.opened_at), i.severity, i.category, i.status, i.title]
                for i in incidents
                if i.category in ("security", "data")
            ],
        )
    )
    sections.append(section)
    status.append(["Incidents", f"{len(incidents)} opened"])

    # Security findings and bans (the detection duty's tables, if they exist)
    section = Section("Security findings")
    if _table_exists(session, "security_findings"):
        rows = _guarded(
            session,
            "SELECT severity, kind, count(*) FROM security_findings"
            " WHERE first_seen >= :start AND first_seen < :end GROUP BY 1, 2 ORDER BY 1, 2",
            span,
        )
        if isinstance(rows, str):
            section.paragraphs.append(f"security_findings {rows}")
        else:
            total = sum(int(r[2]) for r in rows)
            section.paragraphs.append(f"{total} findings first seen this month.")
            section.tables.append(
                (["severity", "kind", "findings"], [[str(c) for c in r] for r in rows])
            )
            status.append(["Security findings", str(total)])
    else:
        section.paragraphs.append("Security detection is not installed (no security_findings).")
    sections.append(section)
    section = Section("Bans")
    if _table_exists(session, "security_bans"):
        rows = _guarded(
            session,
            "SELECT kind, value, jail, banned_at, until, lifted_at FROM security_bans"
            " WHERE banned_at >= :start AND banned_at < :end ORDER BY banned_at",
            span,
        )
        if isinstance(rows, str):
            section.paragraphs.append(f"security_bans {rows}")
        else:
            section.paragraphs.append(f"{len(rows)} bans this month.")
            section.tables.append(
                (
                    ["kind", "value", "jail", "banned (UTC)", "until", "lifted"],
                    [
                        [str(r[0]), str(r[1]), str(r[2]), _fmt(r[3]), _fmt(r[4]), _fmt(r[5])]
                        for r in rows
                    ],
                )
            )
            status.append(["Bans", str(len(rows))])
    else:
        section.paragraphs.append("Security detection is not installed (no security_bans).")
    sections.append(section)

    # Audit trail
    section = Section("Audit trail")
    last_check = session.scalars(
        select(ComplianceRun)
        .where(ComplianceRun.check == "audit-chain", ComplianceRun.at < end)
        .order_by(ComplianceRun.at.desc())
        .limit(1)
    ).first()
    broken = session.scalar(
        select(func.count())
        .select_from(ComplianceRun)
        .where(
            ComplianceRun.check == "audit-chain",
            ComplianceRun.at >= start,
            ComplianceRun.at < end,
            ComplianceRun.ok.is_(False),
        )
    )
    actions = session.execute(
        select(AuditEntry.action, func.count())
        .where(AuditEntry.at >= start, AuditEntry.at < end)
        .group_by(AuditEntry.action)
        .order_by(AuditEntry.action)
    ).all()
    anchors = session.scalar(
        select(func.count())
        .select_from(AuditAnchor)
        .where(AuditAnchor.at >= start, AuditAnchor.at < end)
    )
    if last_check is None:
        chain = "not verified yet"
    elif last_check.ok:
        chain = f"verified {_fmt(last_check.at)} UTC, {last_check.summary.get('rows', 0)} rows"
    else:
        chain = (
            f"BROKEN at {_fmt(last_check.at)} UTC: first bad row "
            f"{last_check.summary.get('first_bad_id')} ({last_check.summary.get('tampering')})"
        )
    section.paragraphs.append(
        f"Chain: {chain}. Failed verifications this month: {broken or 0}. "
        f"Anchors written: {anchors or 0}."
    )
    section.tables.append((["action", "rows"], [[a, str(n)] for a, n in actions]))
    sections.append(section)
    status.append(["Audit chain", chain])

    # Compliance findings
    section = Section("Compliance")
    findings = [f for f in open_findings(session) if f.check != "vulnerability"]
    section.paragraphs.append(
        f"{len(findings)} open findings (access logging, retention, data subject requests)."
    )
    section.tables.append(
        (
            ["check", "severity", "finding", "since (UTC)"],
            [[f.check, f.severity, f.title, _fmt(f.first_seen)] for f in findings],
        )
    )
    clocks = session.scalars(
        select(BreachClock)
        .where(BreachClock.started_at >= start, BreachClock.started_at < end)
        .order_by(BreachClock.started_at)
    ).all()
    section.tables.append(
        (
            ["breach incident", "started (UTC)", "deadline", "outcome", "stopped", "late"],
            [
                [
                    f"#{c.incident_id}",
                    _fmt(c.started_at),
                    _fmt(c.deadline_at),
                    c.outcome or "open",
                    _fmt(c.stopped_at),
                    "yes" if (c.stopped_at or now) > c.deadline_at else "no",
                ]
                for c in clocks
            ],
        )
    )
    sections.append(section)
    status.append(["Compliance findings", str(len(findings))])
    status.append(["Breach clocks", f"{len(clocks)} started"])

    # Vulnerability scan
    section = Section("Dependency vulnerabilities")
    scan_run = session.scalars(
        select(ComplianceRun)
        .where(ComplianceRun.check == "vulnerability", ComplianceRun.at < end)
        .order_by(ComplianceRun.at.desc())
        .limit(1)
    ).first()
    vulns = open_findings(session, "vulnerability")
    if scan_run is None:
        section.paragraphs.append("No scan has run yet.")
        status.append(["Vulnerability scan", "not run"])
    else:
        section.paragraphs.append(
            f"Last scan {_fmt(scan_run.at)} UTC: {scan_run.summary.get('packages', '?')} "
            f"packages against {scan_run.summary.get('advisories', '?')} advisories."
        )
        counts = {s: sum(1 for v in vulns if v.severity == s) for s in SEVERITY_ORDER}
        status.append(
            ["Vulnerability scan", ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "clean"]
        )
    section.tables.append(
        (
            ["severity", "package", "version", "advisory", "fixed in"],
            [
                [
                    v.severity,
                    str(v.evidence.get("package")),
                    str(v.evidence.get("version")),
                    str(v.evidence.get("advisory")),
                    ", ".join(v.evidence.get("fixed_in") or []) or "none",
                ]
                for v in vulns
            ],
        )
    )
    sections.append(section)

    summary.paragraphs.append(
        f"Period {start:%Y-%m-%d} to {end:%Y-%m-%d} (UTC), generated {_fmt(now)} UTC."
    )
    summary.tables.append((["area", "status"], status))
    return Report(f"Security audit report, {start:%B %Y}", month, sections)


def _write_atomic(path: Path, content: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(content, encoding="utf-8")
    os.replace(temporary, path)


def write_report(
    session: Session, directory: Path, month: str, now: datetime, by: str = "eventops"
) -> tuple[Path, Path]:
    report = build_report(session, month, now)
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / f"security-audit-{month}.md"
    page = directory / f"security-audit-{month}.html"
    _write_atomic(markdown, report.markdown())
    _write_atomic(page, report.html())
    audit(
        session,
        by,
        "report.security-audit",
        f"report:{month}",
        {"files": [markdown.name, page.name]},
        at=now,
    )
    return markdown, page


def list_reports(directory: Path) -> list[Path]:
    if not directory.exists():
        return []
    return sorted(directory.glob("security-audit-*.md"), reverse=True)
