"""The escalation sweeper: due escalation rows become outbox rows; the outbox is delivered."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.notify import Delivery, deliver
from core.pipeline import add_event
from models.config import EventopsConfig
from models.db import affected
from models.tables import Check, Incident, Notification

# A claimed notification is invisible to other sweepers this long: longer than Apprise's
# connect and read timeouts, so a slow channel is not sent twice by a second sweeper.
SEND_LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(hours=1)

SessionFactory = Callable[[], AbstractContextManager[Session]]


def retry_delay(attempts: int) -> timedelta:
    """Backoff after the n-th failed attempt: 30 s, 1 min, 2 min, ... capped at one hour."""
    return min(timedelta(seconds=30 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


_CLAIM_ESCALATIONS = text(
    """
    UPDATE escalations SET state = 'fired', fired_at = :now
    WHERE id IN (
        SELECT id FROM escalations
        WHERE state = 'pending' AND due_at <= :now
        ORDER BY due_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, incident_id, step, kind
    """
)


def fire_due_escalations(
    session: Session, config: EventopsConfig, now: datetime | None = None, limit: int = 1000
) -> int:
    """Turn due escalation steps into outbox rows, one per routed channel. Returns rows queued.

    The step re-reads its incident when it fires: an incident resolved or acknowledged
    before its delay ran out notifies nobody.
    """
    now = now or utcnow()
    queued = 0
    for step in session.execute(_CLAIM_ESCALATIONS, {"now": now, "limit": limit}).all():
        incident = session.get(Incident, step.incident_id)
        if incident is None:
            continue
        if step.kind == "opened" and incident.status != "open":
            add_event(
                session,
                incident.id,
                now,
                "escalation skipped",
                detail=f"step {step.step}: incident is {incident.status}",
            )
            continue
        channels = config.routes.get(incident.severity, [])  # type: ignore[call-overload]
        if not channels:
            add_event(
                session,
                incident.id,
                now,
                "not routed",
                detail=f"no channel routes {incident.severity} alerts",
            )
            continue
        title, body = compose(session, incident, step.kind)
        for channel in channels:
            queued += len(
                session.execute(
                    insert(Notification)
                    .values(
                        incident_id=incident.id,
                        step=step.step,
                        kind=step.kind,
                        channel=channel,
                        title=title,
                        body=body,
                        state="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(constraint="uq_notifications_key")
                    .returning(Notification.id)
                ).all()
            )
    return queued


def compose(session: Session, incident: Incident, kind: str) -> tuple[str, str]:
    """The message people read at 3 a.m.: what, since when, why, and where to look."""
    check = session.get(Check, incident.check_id) if incident.check_id else None
    label = incident.severity.upper()
    if kind == "resolved":
        duration = (incident.resolved_at or utcnow()) - incident.opened_at
        title = f"[RESOLVED] {incident.title.replace(' is down', ' is back up')}"
        body = (
            f"Incident #{incident.id} resolved after {_human(duration)}.\n"
            f"Opened {incident.opened_at:%Y-%m-%d %H:%M:%S} UTC."
        )
        return title, body
    title = f"[{label}] {incident.title}"
    lines = [f"Incident #{incident.id}: {incident.summary or incident.title}"]
    lines.append(f"Opened {incident.opened_at:%Y-%m-%d %H:%M:%S} UTC.")
    if check is not None:
        lines.append(f"Target: {check.method} {check.url}")
    lines.append(f"Acknowledge: eventops incidents ack {incident.id}")
    return title, "\n".join(lines)


def _human(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@dataclass(frozen=True)
class ClaimedNotification:
    id: int
    incident_id: int
    kind: str
    channel: str
    title: str
    body: str
    attempts: int
    severity: str


_CLAIM_NOTIFICATIONS = text(
    """
    UPDATE notifications SET
        attempts = attempts + 1,
        next_attempt_at = CAST(:now AS timestamptz) + make_interval(secs => :lease)
    WHERE id IN (
        SELECT id FROM notifications
        WHERE state = 'pending' AND next_attempt_at <= :now
        ORDER BY next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, incident_id, kind, channel, title, body, attempts,
        (SELECT severity FROM incidents WHERE incidents.id = notifications.incident_id)
    """
)


def claim_notifications(
    session: Session, now: datetime | None = None, limit: int = 200
) -> list[ClaimedNotification]:
    """Lease due outbox rows for sending. A sender that dies mid-send leaves the row to be
    claimed again when the lease runs out: a notification may repeat, it is never lost."""
    now = now or utcnow()
    params = {"now": now, "limit": limit, "lease": SEND_LEASE.total_seconds()}
    return [ClaimedNotification(*row) for row in session.execute(_CLAIM_NOTIFICATIONS, params)]


def record_delivery(
    session: Session, note: ClaimedNotification, result: Delivery, now: datetime | None = None
) -> None:
    """Store what happened to one send: sent, or failed and due again after a backoff."""
    now = now or utcnow()
    if result.ok:
        sent = affected(
            session.execute(
                update(Notification)
                .where(Notification.id == note.id, Notification.state == "pending")
                .values(state="sent", sent_at=now, last_error=None)
            )
        )
        if not sent:
            return
        if note.kind == "opened":
            session.execute(
                update(Incident)
                .where(Incident.id == note.incident_id)
                .values(notified_at=func.coalesce(Incident.notified_at, now))
            )
        add_event(
            session, note.incident_id, now, "notified", detail=f"{note.kind} via {note.channel}"
        )
        return
    session.execute(
        update(Notification)
        .where(Notification.id == note.id, Notification.state == "pending")
        .values(last_error=result.error, next_attempt_at=now + retry_delay(note.attempts))
    )
    add_event(
        session,
        note.incident_id,
        now,
        "notification failed",
        detail=f"{note.channel}, attempt {note.attempts}: {result.error}",
    )


def send(config: EventopsConfig, note: ClaimedNotification) -> Delivery:
    try:
        channel = config.channel(note.channel)
    except StopIteration:
        return Delivery(False, f"channel {note.channel!r} is not in the config")
    kind = "resolved" if note.kind == "resolved" else note.severity
    return deliver(channel.url.get_secret_value(), note.title, note.body, kind)


def sweep(
    sessions: SessionFactory,
    config: EventopsConfig,
    now: Callable[[], datetime] = utcnow,
    sender: Callable[[EventopsConfig, ClaimedNotification], Delivery] = send,
) -> dict[str, int]:
    """One sweeper pass. No transaction stays open while a channel is being called."""
    with sessions() as session:
        queued = fire_due_escalations(session, config, now())
    with sessions() as session:
        claimed = claim_notifications(session, now())
    if not claimed:
        return {"queued": queued, "sent": 0, "failed": 0}
    with ThreadPoolExecutor(max_workers=min(8, len(claimed))) as pool:
        results = list(pool.map(lambda note: sender(config, note), claimed))
    with sessions() as session:
        for note, result in zip(claimed, results, strict=True):
            record_delivery(session, note, result, now())
    sent = sum(r.ok for r in results)
    return {"queued": queued, "sent": sent, "failed": len(results) - sent}


def pending_counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Notification.state, func.count()).group_by(Notification.state)
    ).all()
    return {state: count for state, count in rows}
