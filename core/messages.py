"""What people read at 3 a.m.: titles and bodies of pages, groups, digests and updates."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from models.tables import Incident

LISTED = 50  # a group message lists this many incidents, then counts the rest
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def worst(severities: Sequence[str]) -> str:
    return min(severities, key=lambda s: SEVERITY_ORDER.get(s, 9))


def human(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _stamp(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


def _line(incident: Incident) -> str:
    text = f"#{incident.id} {incident.title}"
    if incident.summary and incident.summary != incident.title:
        text += f": {incident.summary}"
    return text


def _listing(incidents: Sequence[Incident]) -> list[str]:
    lines = [f"- {_line(i)}" for i in incidents[:LISTED]]
    if len(incidents) > LISTED:
        lines.append(f"- ... and {len(incidents) - LISTED} more")
    return lines


def _group_label(group_key: str) -> str:
    labels = [part for part in group_key.split("|")[1:] if not part.endswith("=")]
    return ", ".join(labels)


def compose(
    kind: str,
    incidents: Sequence[Incident],
    group_key: str,
    now: datetime,
    status_update: str | None = None,
) -> tuple[str, str]:
    """Title and body for one message about one or more incidents of one group."""
    incidents = sorted(incidents, key=lambda i: i.id)
    severity = worst([i.severity for i in incidents]).upper()
    first = incidents[0]
    many = len(incidents) > 1
    where = _group_label(group_key)
    if kind == "digest":
        title = f"[DIGEST] {len(incidents)} info alert{'s' if many else ''} ({now:%d %b})"
        body = [f"Info alerts since the last digest, {_stamp(now)}:"]
        body += [f"- {_line(i)} [{i.status}]" for i in incidents[:LISTED]]
        if len(incidents) > LISTED:
            body.append(f"- ... and {len(incidents) - LISTED} more")
        return title, "\n".join(body)
    if kind in ("resolved", "status-resolved"):
        if many:
            return f"[RESOLVED] {len(incidents)} incidents in {where}", "\n".join(
                ["Resolved:", *_listing(incidents)]
            )
        duration = (first.resolved_at or now) - first.opened_at
        title = f"[RESOLVED] {first.title.replace(' is down', ' is back up')}"
        return title, f"Incident #{first.id} resolved after {human(duration)}."
    if kind == "status-update":
        title = f"[UPDATE] {first.title}"
        return title, f"Incident #{first.id} ({first.status}): {status_update or ''}"
    prefix = {
        "reminder": f"[{severity} REMINDER]",
        "flapping": f"[{severity} FLAPPING]",
        "reopened": f"[{severity} REOPENED]",
        "promoted": f"[{severity} PROMOTED]",
        "status-opened": f"[{severity} INCIDENT]",
    }.get(kind, f"[{severity}]")
    if many:
        title = f"{prefix} {len(incidents)} problems in {where}"
        body = [*_listing(incidents), "", "Acknowledge: eventops incidents ack ID"]
        return title, "\n".join(body)
    title = f"{prefix} {first.title}"
    body = [_line(first), f"Opened {_stamp(first.opened_at)}."]
    if first.impact:
        body.append(f"Impact: {first.impact}")
    if kind == "flapping":
        body.append(
            f"It has resolved and returned {first.reopen_count} times; held open until it settles."
        )
    if kind == "reminder":
        body.append(f"Still unacknowledged after {human(now - first.opened_at)}.")
    if kind == "promoted":
        body.append("A warning that kept firing: now critical.")
    body.append(f"Acknowledge: eventops incidents ack {first.id}")
    return title, "\n".join(body)
