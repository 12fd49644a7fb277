"""The daily security event analysis: one local day's findings by detector and severity, top
offenders, bans, failed-login volume, and the health of every source, as Markdown stored in
`security_daily_reports` (a re-run replaces the day's report)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.security.findings import jsonable
from models.config import EventopsConfig
from models.security import SecurityDailyReport


def day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start, end


def previous_local_day(now: datetime, tz: str) -> date:
    return now.astimezone(ZoneInfo(tz)).date() - timedelta(days=1)


def analyse(session: Session, config: EventopsConfig, day: date, now: datetime) -> dict[str, Any]:
    """Figures of the day: findings are counted by the window they describe."""
    start, end = day_bounds(day, config.timezone)
    params = {"start": start, "end": end}

    def rows(sql: str) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in session.execute(text(sql), params)]

    by_detector = rows(
        """
        SELECT detector, severity, count(*) AS findings FROM security_findings
        WHERE window_end >= :start AND window_start < :end
        GROUP BY detector, severity ORDER BY detector, severity
        """
    )
    offenders = rows(
        """
        SELECT subject, count(*) AS findings,
               max(CASE severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END) AS worst,
               string_agg(DISTINCT kind, ', ' ORDER BY kind) AS kinds
        FROM security_findings
        WHERE window_end >= :start AND window_start < :end
        GROUP BY subject ORDER BY worst DESC, findings DESC, subject LIMIT 10
        """
    )
    bans = rows(
        """
        SELECT kind, value, jail, banned_at, until, offence_count, lifted_at
        FROM security_bans WHERE banned_at >= :start AND banned_at < :end
        ORDER BY banned_at
        """
    )
    logins = rows(
        """
        SELECT count(*) FILTER (WHERE kind = 'failure') AS failures,
               count(*) FILTER (WHERE kind = 'success') AS successes,
               count(DISTINCT ip) FILTER (WHERE kind = 'failure') AS failing_ips
        FROM security_events WHERE stream = 'auth' AND at >= :start AND at < :end
        """
    )[0]
    streams = rows(
        """
        SELECT stream, count(*) AS events FROM security_events
        WHERE at >= :start AND at < :end GROUP BY stream ORDER BY stream
        """
    )
    sources = rows(
        """
        SELECT name, cursor, updated_at, details FROM security_detector_state
        ORDER BY name
        """
    )
    return jsonable(
        {
            "day": day,
            "timezone": config.timezone,
            "by_detector": by_detector,
            "top_offenders": offenders,
            "bans": bans,
            "logins": logins,
            "events": streams,
            "progress": sources,
        }
    )


def render(figures: dict[str, Any]) -> str:
    severity_names = {2: "critical", 1: "warning", 0: "info"}
    total = sum(r["findings"] for r in figures["by_detector"])
    critical = sum(r["findings"] for r in figures["by_detector"] if r["severity"] == "critical")
    lines = [
        f"# Security events, {figures['day']} ({figures['timezone']})",
        "",
        f"{total} findings ({critical} critical), {len(figures['bans'])} bans, "
        f"{figures['logins']['failures']} failed logins from {figures['logins']['failing_ips']} "
        f"IPs ({figures['logins']['successes']} successful).",
        "",
        "## Findings by detector",
        "",
    ]
    if figures["by_detector"]:
        lines += ["| detector | severity | findings |", "|---|---|---:|"]
        lines += [
            f"| {r['detector']} | {r['severity']} | {r['findings']} |"
            for r in figures["by_detector"]
        ]
    else:
        lines.append("None.")
    lines += ["", "## Top offenders", ""]
    if figures["top_offenders"]:
        lines += ["| subject | worst | findings | kinds |", "|---|---|---:|---|"]
        lines += [
            f"| `{r['subject']}` | {severity_names[r['worst']]} | {r['findings']} | {r['kinds']} |"
            for r in figures["top_offenders"]
        ]
    else:
        lines.append("None.")
    lines += ["", "## Bans", ""]
    if figures["bans"]:
        lines += [
            "| kind | value | jail | from | until | offence | lifted |",
            "|---|---|---|---|---|---:|---|",
        ]
        lines += [
            f"| {b['kind']} | `{b['value']}` | {b['jail']} | {b['banned_at']} | {b['until']} "
            f"| {b['offence_count']} | {b['lifted_at'] or ''} |"
            for b in figures["bans"]
        ]
    else:
        lines.append("None.")
    lines += ["", "## Events read", ""]
    lines += [f"- {r['stream']}: {r['events']}" for r in figures["events"]] or ["- none"]
    problems = [
        p
        for p in figures["progress"]
        if p["name"].startswith("source:") and (p["details"] or {}).get("rejected")
    ]
    if problems:
        lines += ["", "## Sources with rejected rows", ""]
        lines += [
            f"- {p['name']}: {p['details']['rejected']} rejected; latest: "
            f"{(p['details'].get('recent_errors') or ['?'])[0]}"
            for p in problems
        ]
    return "\n".join(lines) + "\n"


def daily_analysis(
    session: Session, config: EventopsConfig, day: date, now: datetime
) -> tuple[str, dict[str, Any]]:
    """Analyse `day`, store the report (replacing an earlier one), return (Markdown, figures)."""
    figures = analyse(session, config, day, now)
    markdown = render(figures)
    session.execute(
        insert(SecurityDailyReport)
        .values(day=day, markdown=markdown, figures=figures, created_at=now)
        .on_conflict_do_update(
            index_elements=["day"],
            set_={"markdown": markdown, "figures": figures, "created_at": now},
        )
    )
    return markdown, figures
