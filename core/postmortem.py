"""Post-mortem drafts: the facts of a resolved incident, laid out for people to finish.

A draft is built only from rows (the incident, its timeline, the messages that carried it,
the outcomes of its check, the incidents it explained), so the same rows always give the
same text. The sweeper drafts resolved incidents once they have settled; people edit the
draft in `incidents.postmortem` and fill in the cause, what went well and what did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.incidents import FLAP_WINDOW, IncidentNotFound, add_event
from core.messages import human
from models.tables import Check, Incident, IncidentEvent, Notification, NotificationItem, Outcome

# How far before the opening the outcomes of a check incident are read: the lead-up.
LEAD_UP = timedelta(minutes=30)
DRAFTED = "post-mortem drafted"


def stamp(at: datetime | None) -> str:
    return "—" if at is None else f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def cell(value: object) -> str:
    """Text made safe for one Markdown table cell: pipes escaped, line breaks as <br>."""
    if value is None or value == "":
        return "—"
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return "<br>".join(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


@dataclass(frozen=True)
class _Outcomes:
    since: datetime
    until: datetime
    total: int
    by_status: dict[str, int]
    failures_by_reason: list[tuple[str, int]]
    first_failure: Outcome | None


def _outcomes(session: Session, incident: Incident, now: datetime) -> _Outcomes | None:
    if incident.check_id is None:
        return None
    since = incident.opened_at - LEAD_UP
    until = incident.resolved_at or now
    in_window = (
        Outcome.check_id == incident.check_id,
        Outcome.observed_at >= since,
        Outcome.observed_at <= until,
    )
    by_status = {
        status: count
        for status, count in session.execute(
            select(Outcome.status, func.count()).where(*in_window).group_by(Outcome.status)
        ).all()
    }
    reasons = session.execute(
        select(Outcome.reason, func.count())
        .where(*in_window, Outcome.status == "down")
        .group_by(Outcome.reason)
    ).all()
    failures_by_reason = sorted(
        ((reason or "unknown", count) for reason, count in reasons),
        key=lambda pair: (-pair[1], pair[0]),
    )
    # The failure that started the streak which opened the incident: the first failure
    # after the last success before the opening. An earlier blip that recovered is not it.
    last_up = session.scalar(
        select(func.max(Outcome.observed_at)).where(
            *in_window, Outcome.status == "up", Outcome.observed_at <= incident.opened_at
        )
    )
    first_failure = session.scalars(
        select(Outcome)
        .where(
            *in_window,
            Outcome.status == "down",
            Outcome.observed_at <= incident.opened_at,
            Outcome.observed_at > (last_up or since - timedelta(microseconds=1)),
        )
        .order_by(Outcome.observed_at, Outcome.slot, Outcome.id)
        .limit(1)
    ).first()
    if first_failure is None:  # probes observed after the opening (a slow pipeline)
        first_failure = session.scalars(
            select(Outcome)
            .where(*in_window, Outcome.status == "down")
            .order_by(Outcome.observed_at, Outcome.slot, Outcome.id)
            .limit(1)
        ).first()
    return _Outcomes(
        since=since,
        until=until,
        total=sum(by_status.values()),
        by_status=by_status,
        failures_by_reason=failures_by_reason,
        first_failure=first_failure,
    )


def _raised_by(incident: Incident) -> str:
    if incident.rule:
        return f"rule `{incident.rule}`"
    detector = incident.fingerprint.split(":", 1)[0]
    return f"the {detector} detector (`{incident.fingerprint}`)"


def draft_postmortem(session: Session, incident_id: int, now: datetime | None = None) -> str:
    """A Markdown draft of the incident's post-mortem. `now` matters only for an incident
    still unresolved (it ends the outcome window); a resolved one always drafts the same."""
    now = now or utcnow()
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise IncidentNotFound(f"no incident #{incident_id}")
    events = session.scalars(
        select(IncidentEvent)
        # The draft's own event is not part of the story, and would change a redraft.
        .where(IncidentEvent.incident_id == incident_id, IncidentEvent.kind != DRAFTED)
        .order_by(IncidentEvent.at, IncidentEvent.id)
    ).all()
    notifications = session.scalars(
        select(Notification)
        .where(
            Notification.id.in_(
                select(NotificationItem.notification_id).where(
                    NotificationItem.incident_id == incident_id
                )
            )
        )
        .order_by(Notification.created_at, Notification.id)
    ).all()
    check = session.get(Check, incident.check_id) if incident.check_id is not None else None
    parent = (
        session.get(Incident, incident.parent_incident_id)
        if incident.parent_incident_id is not None
        else None
    )
    children = session.scalars(
        select(Incident).where(Incident.parent_incident_id == incident_id).order_by(Incident.id)
    ).all()
    child_checks = {
        c.id: c.name
        for c in session.scalars(
            select(Check).where(Check.id.in_({c.check_id for c in children if c.check_id}))
        )
    }
    outcomes = _outcomes(session, incident, now)

    # The first acknowledgement counts, even if a reopen cleared it from the row since.
    first_ack = next((e for e in events if e.kind == "acknowledged"), None)
    acked_at = first_ack.at if first_ack else incident.acknowledged_at
    acked_by = first_ack.actor if first_ack else incident.acknowledged_by

    out = [f"# Post-mortem: #{incident.id} {_one_line(incident.title)}", ""]
    out += ["## Summary", ""]
    flapping = "yes" if incident.flapping else "no"
    reopens = f"{incident.reopen_count} reopen{'' if incident.reopen_count == 1 else 's'}"
    out += _table(
        ("Field", "Value"),
        [
            ("Severity", incident.severity),
            ("Category", incident.category),
            ("Impact", incident.impact),
            ("Status", incident.status),
            ("Detected as", incident.summary),
            ("Check", check.name if check else None),
            ("Opened", stamp(incident.opened_at)),
            (
                "Acknowledged",
                f"{stamp(acked_at)} by {acked_by}" if acked_at else "not acknowledged",
            ),
            ("Resolved", stamp(incident.resolved_at) if incident.resolved_at else "not resolved"),
            ("Flapping", f"{flapping}, {reopens}"),
            ("Parent incident", f"#{parent.id} {parent.title}" if parent else None),
        ],
    )

    out += ["", "## Durations", ""]
    if outcomes is None:
        detect = f"n/a (raised by {_raised_by(incident)})"
    elif outcomes.first_failure is None:
        detect = "n/a (no failing outcome in the window)"
    else:
        first_seen = outcomes.first_failure.observed_at
        detect = (
            f"{human(max(incident.opened_at - first_seen, timedelta(0)))} "
            f"(first failure {stamp(first_seen)}, opened {stamp(incident.opened_at)})"
        )
    acknowledge = (
        f"{human(acked_at - incident.opened_at)} (by {acked_by})"
        if acked_at
        else "not acknowledged"
    )
    if incident.resolved_at is not None:
        resolve = human(incident.resolved_at - incident.opened_at)
    else:
        resolve = f"not resolved (open {human(now - incident.opened_at)} at {stamp(now)})"
    out += [
        f"- Time to detect: {detect}",
        f"- Time to acknowledge: {acknowledge}",
        f"- Time to resolve: {resolve}",
    ]

    out += ["", "## Timeline", ""]
    out += _table(
        ("Time (UTC)", "Event", "Who", "Detail"),
        [(stamp(e.at), e.kind, e.actor, e.detail) for e in events],
    )

    out += ["", "## Notifications", ""]
    if notifications:
        out += _table(
            ("Queued", "Channel", "Kind", "State", "Sent", "Attempts", "Note"),
            [
                (
                    stamp(n.created_at),
                    n.channel,
                    n.kind,
                    n.state,
                    stamp(n.sent_at),
                    n.attempts,
                    f"fallback for notification {n.fallback_for}"
                    + (f"; {n.last_error}" if n.last_error else "")
                    if n.fallback_for
                    else n.last_error,
                )
                for n in notifications
            ],
        )
    else:
        out.append("No notification carried this incident.")

    if outcomes is not None:
        out += ["", "## Outcomes", ""]
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(outcomes.by_status.items()))
        out.append(
            f"{outcomes.total} outcome{'' if outcomes.total == 1 else 's'} of "
            f"`{check.name if check else incident.check_id}` from {stamp(outcomes.since)} to "
            f"{stamp(outcomes.until)}" + (f" ({statuses})." if statuses else ".")
        )
        if outcomes.failures_by_reason:
            out += ["", *_table(("Failure reason", "Count"), list(outcomes.failures_by_reason))]
        first = outcomes.first_failure
        if first is not None:
            what = first.reason or "failed"
            if first.http_status is not None:
                what += f", HTTP {first.http_status}"
            if first.detail and first.detail != f"HTTP {first.http_status}":
                what += f": {_one_line(first.detail)}"
            out += ["", f"First failing outcome: {stamp(first.observed_at)} ({what})."]

    out += ["", "## Affected checks", ""]
    if check is not None:
        out.append(f"- `{check.name}` (group {check.group_name}): this incident's check")
    elif incident.check_id is None:
        out.append(f"- no check: raised by {_raised_by(incident)}")
    for child in children:
        where = f"`{child_checks[child.check_id]}`" if child.check_id in child_checks else "—"
        out.append(
            f"- {where}: #{child.id} {_one_line(child.title)} ({child.status}), "
            f"explained by this incident"
        )

    out += ["", "## Cause", "", "## What went well", "", "## What went wrong", ""]
    out += ["## Follow-ups", "", "- [ ] ", ""]
    return "\n".join(out)


def draft_missing_postmortems(
    session: Session,
    now: datetime | None = None,
    limit: int = 50,
    *,
    settle: timedelta = FLAP_WINDOW,
) -> list[int]:
    """Draft the post-mortem of resolved incidents that have none; returns their ids.

    An incident is drafted once it has stayed resolved for `settle` (by default the flap
    window, inside which the same problem would reopen it), so a draft is not written about
    an incident that is about to come back. Rows are claimed with SKIP LOCKED: two sweepers
    never draft the same incident.
    """
    now = now or utcnow()
    ids = session.scalars(
        select(Incident.id)
        .where(
            Incident.status == "resolved",
            Incident.postmortem.is_(None),
            Incident.resolved_at <= now - settle,
        )
        .order_by(Incident.resolved_at, Incident.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for incident_id in ids:
        draft = draft_postmortem(session, incident_id, now)
        incident = session.get(Incident, incident_id)
        assert incident is not None
        incident.postmortem = draft
        add_event(session, incident_id, now, DRAFTED, detail="waiting for its cause and follow-ups")
    return list(ids)
