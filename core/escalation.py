"""The escalation sweeper: due escalation rows become grouped outbox messages; the outbox is
delivered with retries, fallbacks and a watch on channels that keep failing."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.incidents import (
    PAGING_KINDS,
    Problem,
    add_event,
    policy_for,
    queue_escalation,
    queue_opening,
    raise_problem,
    resolve_problem,
)
from core.messages import compose, worst
from core.notify import Delivery, deliver
from core.postmortem import draft_missing_postmortems
from core.silences import muted_until
from models.config import EventopsConfig
from models.tables import (
    ChannelHealth,
    Escalation,
    Incident,
    IncidentEvent,
    Notification,
    NotificationItem,
)

# A claimed message is invisible to other sweepers this long: longer than Apprise's connect
# and read timeouts, so a slow channel is not sent twice by a second sweeper.
SEND_LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(hours=1)
# After this long a message stops retrying; its failure is on every incident's timeline
# and the channel's own incident has long been raised.
GIVE_UP_AFTER = timedelta(hours=24)

SessionFactory = Callable[[], AbstractContextManager[Session]]


def retry_delay(attempts: int) -> timedelta:
    """Backoff after the n-th failed attempt: 30 s, 1 min, 2 min, ... capped at one hour."""
    return min(timedelta(seconds=30 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def channel_fingerprint(channel: str) -> str:
    return f"channel:{channel}"


_CLAIM_ESCALATIONS = text(
    """
    WITH due AS (
        SELECT id, group_key, kind, step FROM escalations
        WHERE state = 'pending' AND due_at <= :now
        ORDER BY due_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), companions AS (
        -- Steps of the same group and rung that are due within the grouping horizon join
        -- the same message instead of following it a few seconds later.
        SELECT id FROM escalations
        WHERE state = 'pending' AND due_at > :now AND due_at <= :horizon
          AND (group_key, kind, step) IN (SELECT group_key, kind, step FROM due)
        FOR UPDATE SKIP LOCKED
    )
    UPDATE escalations SET state = 'fired', fired_at = :now
    WHERE id IN (SELECT id FROM due UNION SELECT id FROM companions)
    RETURNING id, incident_id, step, kind, group_key
    """
)


@dataclass
class _Message:
    incidents: list[Incident]
    steps: list[tuple[int, int, str]]  # (incident id, step, kind)
    status_update: str | None = None


def fire_due_escalations(
    session: Session, config: EventopsConfig, now: datetime | None = None, limit: int = 5000
) -> int:
    """Turn due escalation steps into outbox messages: one per group, kind and channel.

    Each step re-reads its incident when it fires: an incident resolved, acknowledged or
    explained by a failing dependency before its delay ran out pages nobody, and a silenced
    one waits for the silence to end.
    """
    now = now or utcnow()
    horizon = now + max(p.group_wait for p in config.policies.values())
    rows = session.execute(
        _CLAIM_ESCALATIONS, {"now": now, "limit": limit, "horizon": horizon}
    ).all()
    if not rows:
        return 0
    incidents = {
        i.id: i
        for i in session.scalars(
            select(Incident).where(Incident.id.in_({r.incident_id for r in rows}))
        )
    }
    messages: dict[tuple[str, str, str], _Message] = {}
    for row in rows:
        incident = incidents.get(row.incident_id)
        if incident is None:
            continue
        for channel in _route(session, row, incident, config, now):
            message = messages.setdefault((row.group_key, row.kind, channel), _Message([], []))
            message.incidents.append(incident)
            message.steps.append((incident.id, row.step, row.kind))
            if row.kind == "status-update":
                message.status_update = _latest_update(session, incident.id)
    queued = 0
    for (group, kind, channel), message in messages.items():
        queued += _enqueue(session, channel, kind, group, message, now)
    return queued


def _route(
    session: Session, row: Row[Any], incident: Incident, config: EventopsConfig, now: datetime
) -> list[str]:
    """The channels a fired step goes to, or [] after recording why it goes nowhere."""
    kind: str = row.kind
    step: int = row.step
    policy = policy_for(incident, config)
    if kind == "digest":
        return list(policy.channels)
    if kind in ("resolved", "status-resolved"):
        if kind == "status-resolved":
            return list(policy.stakeholders)
        return _channels_told(session, incident.id)
    if kind == "promote":
        _promote(session, incident, config, now)
        return []
    # Pages stop once someone is on it; stakeholder updates go on until it is resolved.
    still_relevant = (
        incident.status != "resolved" if kind.startswith("status-") else incident.status == "open"
    )
    if not still_relevant:
        add_event(
            session,
            incident.id,
            now,
            "escalation skipped",
            detail=f"{kind} step {step}: incident is {incident.status}",
        )
        return []
    if incident.parent_incident_id is not None:
        parent = session.get(Incident, incident.parent_incident_id)
        if parent is not None and parent.status != "resolved":
            add_event(
                session,
                incident.id,
                now,
                "escalation skipped",
                detail=f"{kind} step {step}: #{parent.id} explains it",
            )
            return []
    until = muted_until(session, incident.labels, config, now)
    if until is not None:
        session.execute(
            update(Escalation)
            .where(Escalation.id == row.id)
            .values(state="pending", due_at=until, fired_at=None)
        )
        add_event(
            session,
            incident.id,
            now,
            "silenced",
            detail=f"{kind} step {step} held until {until:%Y-%m-%d %H:%M} UTC",
        )
        return []
    if kind.startswith("status-"):
        return list(policy.stakeholders)
    if not policy.steps:
        return []
    last = len(policy.steps) - 1
    if kind in ("reopened", "flapping"):
        return list(policy.steps[0].channels)
    if kind == "reminder":
        _queue_reminder(session, incident, config, now, step + 1)
        return list(policy.steps[last].channels)
    if step >= last and policy.repeat_every is not None:
        _queue_reminder(session, incident, config, now, 1)
    return list(policy.steps[min(step, last)].channels)


def _queue_reminder(
    session: Session, incident: Incident, config: EventopsConfig, now: datetime, number: int
) -> None:
    policy = policy_for(incident, config)
    if policy.repeat_every is None:
        return
    from core.incidents import group_key

    key = group_key(incident.labels, incident.severity, config)
    queue_escalation(session, incident.id, "reminder", now + policy.repeat_every, key, number)


def _promote(session: Session, incident: Incident, config: EventopsConfig, now: datetime) -> None:
    """A warning still firing after its policy's promote_after becomes critical."""
    if incident.status != "open" or incident.severity == "critical":
        return
    was = incident.severity
    incident.severity = "critical"
    incident.labels = {**incident.labels, "severity": "critical"}
    incident.promoted_at = now
    add_event(session, incident.id, now, "promoted", detail=f"{was} still firing: now critical")
    session.execute(
        update(Escalation)
        .where(
            Escalation.incident_id == incident.id,
            Escalation.state == "pending",
            Escalation.kind.in_(PAGING_KINDS),
        )
        .values(state="cancelled")
    )
    queue_opening(session, incident, config, now, kind="promoted")


def _channels_told(session: Session, incident_id: int) -> list[str]:
    """Channels that were told the incident was open: the ones that hear it resolved."""
    return list(
        session.scalars(
            select(NotificationItem.channel)
            .join(Notification, Notification.id == NotificationItem.notification_id)
            .where(
                NotificationItem.incident_id == incident_id,
                NotificationItem.kind.in_(PAGING_KINDS),
                Notification.state == "sent",
            )
            .distinct()
            .order_by(NotificationItem.channel)
        )
    )


def _latest_update(session: Session, incident_id: int) -> str | None:
    return session.scalar(
        select(IncidentEvent.detail)
        .where(IncidentEvent.incident_id == incident_id, IncidentEvent.kind == "status update")
        .order_by(IncidentEvent.at.desc(), IncidentEvent.id.desc())
        .limit(1)
    )


def _enqueue(
    session: Session,
    channel: str,
    kind: str,
    group: str,
    message: _Message,
    now: datetime,
    fallback_for: int | None = None,
) -> int:
    """Write one outbox message and its items. Items already sent on this channel (a
    redelivery, a replayed step) are left out; a message left with none is not written."""
    notification = Notification(
        channel=channel,
        kind=kind,
        group_key=group,
        severity=worst([i.severity for i in message.incidents]),
        title="",
        body="",
        state="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
        fallback_for=fallback_for,
    )
    session.add(notification)
    session.flush()
    kept = set(
        session.scalars(
            insert(NotificationItem)
            .values(
                [
                    {
                        "notification_id": notification.id,
                        "incident_id": incident_id,
                        "step": step,
                        "kind": step_kind,
                        "channel": channel,
                    }
                    for incident_id, step, step_kind in message.steps
                ]
            )
            .on_conflict_do_nothing(constraint="uq_notification_items_key")
            .returning(NotificationItem.incident_id)
        )
    )
    if not kept:
        session.delete(notification)
        return 0
    incidents = [i for i in message.incidents if i.id in kept]
    notification.title, notification.body = compose(
        kind, incidents, group, now, message.status_update
    )
    return 1


@dataclass(frozen=True)
class ClaimedNotification:
    id: int
    channel: str
    kind: str
    title: str
    body: str
    severity: str
    attempts: int
    created_at: datetime
    fallback_for: int | None


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
    RETURNING id, channel, kind, title, body, severity, attempts, created_at, fallback_for
    """
)


def claim_notifications(
    session: Session, now: datetime | None = None, limit: int = 200
) -> list[ClaimedNotification]:
    """Lease due outbox rows for sending. A sender that dies mid-send leaves the row to be
    claimed again when the lease runs out: a message may repeat, it is never lost."""
    now = now or utcnow()
    params = {"now": now, "limit": limit, "lease": SEND_LEASE.total_seconds()}
    return [ClaimedNotification(*row) for row in session.execute(_CLAIM_NOTIFICATIONS, params)]


def record_delivery(
    session: Session,
    note: ClaimedNotification,
    result: Delivery,
    config: EventopsConfig,
    now: datetime | None = None,
) -> None:
    """Store what happened to one send, and what follows from it: the incidents' timelines,
    the channel's health, a fallback copy, the channel's own incident."""
    now = now or utcnow()
    items = session.execute(
        select(NotificationItem.incident_id, NotificationItem.kind).where(
            NotificationItem.notification_id == note.id
        )
    ).all()
    incident_ids = sorted({item.incident_id for item in items})
    if result.ok:
        sent = session.execute(
            update(Notification)
            # A page withdrawn while in flight was delivered all the same: record it as sent.
            .where(Notification.id == note.id, Notification.state.in_(["pending", "cancelled"]))
            .values(state="sent", sent_at=now, last_error=None)
            .returning(Notification.id)
        ).first()
        if sent is None:
            return
        paged = sorted({i.incident_id for i in items if i.kind in PAGING_KINDS})
        if paged:
            session.execute(
                update(Incident)
                .where(Incident.id.in_(paged))
                .values(notified_at=func.coalesce(Incident.notified_at, now))
            )
            _announce_ends_missed_in_flight(session, paged, config, now)
        _events(session, incident_ids, now, "notified", f"{note.kind} via {note.channel}")
        _channel_ok(session, note.channel, config, now)
        return
    gave_up = now - note.created_at >= GIVE_UP_AFTER
    session.execute(
        update(Notification)
        .where(Notification.id == note.id, Notification.state == "pending")
        .values(
            last_error=result.error,
            next_attempt_at=now + retry_delay(note.attempts),
            state="failed" if gave_up else "pending",
        )
    )
    detail = f"{note.channel}, attempt {note.attempts}: {result.error}"
    _events(session, incident_ids, now, "notification failed", detail)
    if gave_up:
        _events(
            session,
            incident_ids,
            now,
            "notification abandoned",
            f"{note.channel}: no delivery in {GIVE_UP_AFTER}",
        )
    _fall_back(session, note, config, now)
    _channel_failed(session, note.channel, result.error or "failed", config, now)


def _announce_ends_missed_in_flight(
    session: Session, incident_ids: list[int], config: EventopsConfig, now: datetime
) -> None:
    """An incident that resolved while its page was being sent had no one to tell then;
    the channels that just got the page now hear that it is over."""
    from core.incidents import group_key

    for incident in session.scalars(
        select(Incident).where(Incident.id.in_(incident_ids), Incident.status == "resolved")
    ):
        key = group_key(incident.labels, incident.severity, config)
        queue_escalation(session, incident.id, "resolved", now, key, incident.reopen_count)


def _events(
    session: Session, incident_ids: list[int], at: datetime, kind: str, detail: str
) -> None:
    if incident_ids:
        session.execute(
            insert(IncidentEvent),
            [
                {"incident_id": i, "at": at, "kind": kind, "actor": "eventops", "detail": detail}
                for i in incident_ids
            ],
        )


def _fall_back(
    session: Session, note: ClaimedNotification, config: EventopsConfig, now: datetime
) -> None:
    """After `fallback_after` failed attempts, a copy goes to the channel's fallback."""
    if note.attempts < config.notifications.fallback_after or note.fallback_for is not None:
        return
    try:
        fallback = config.channel(note.channel).fallback
    except StopIteration:
        fallback = None
    if fallback is None:
        return
    if session.scalar(select(Notification.id).where(Notification.fallback_for == note.id)):
        return
    original = session.get(Notification, note.id)
    assert original is not None
    steps = session.execute(
        select(NotificationItem.incident_id, NotificationItem.step, NotificationItem.kind).where(
            NotificationItem.notification_id == note.id
        )
    ).all()
    incidents = list(
        session.scalars(select(Incident).where(Incident.id.in_({s.incident_id for s in steps})))
    )
    message = _Message(incidents, [(s.incident_id, s.step, s.kind) for s in steps])
    if _enqueue(session, fallback, note.kind, original.group_key, message, now, note.id):
        copy = session.scalars(
            select(Notification).where(Notification.fallback_for == note.id)
        ).one()
        copy.title, copy.body = original.title, original.body
        _events(
            session,
            [i.id for i in incidents],
            now,
            "fallback",
            f"{note.channel} failed {note.attempts} times: sending via {fallback}",
        )


def _channel_ok(session: Session, channel: str, config: EventopsConfig, now: datetime) -> None:
    session.execute(
        insert(ChannelHealth)
        .values(channel=channel, consecutive_failures=0, last_success_at=now)
        .on_conflict_do_update(
            index_elements=["channel"],
            set_={"consecutive_failures": 0, "last_success_at": now},
        )
    )
    resolve_problem(session, channel_fingerprint(channel), config, now, why="delivered again")


def _channel_failed(
    session: Session, channel: str, error: str, config: EventopsConfig, now: datetime
) -> None:
    failures = session.execute(
        insert(ChannelHealth)
        .values(channel=channel, consecutive_failures=1, last_error=error, last_failure_at=now)
        .on_conflict_do_update(
            index_elements=["channel"],
            set_={
                "consecutive_failures": ChannelHealth.consecutive_failures + 1,
                "last_error": error,
                "last_failure_at": now,
            },
        )
        .returning(ChannelHealth.consecutive_failures)
    ).scalar_one()
    if failures >= config.notifications.channel_incident_after:
        raise_problem(
            session,
            Problem(
                fingerprint=channel_fingerprint(channel),
                title=f"notification channel {channel} is failing",
                severity="critical",
                summary=f"{failures} deliveries in a row failed; last error: {error}",
                labels={"channel": channel, "group": "eventops"},
                category="availability",
                impact="alerts routed to this channel are late or go only to its fallback",
            ),
            config,
            now,
        )


def send(config: EventopsConfig, note: ClaimedNotification) -> Delivery:
    try:
        channel = config.channel(note.channel)
    except StopIteration:
        return Delivery(False, f"channel {note.channel!r} is not in the config")
    kind = "resolved" if note.kind in ("resolved", "status-resolved") else note.severity
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
        drafted = len(draft_missing_postmortems(session, now()))
    with sessions() as session:
        claimed = claim_notifications(session, now())
    if not claimed:
        return {"queued": queued, "sent": 0, "failed": 0, "postmortems": drafted}
    with ThreadPoolExecutor(max_workers=min(8, len(claimed))) as pool:
        results = list(pool.map(lambda note: sender(config, note), claimed))
    with sessions() as session:
        for note, result in zip(claimed, results, strict=True):
            record_delivery(session, note, result, config, now())
    sent = sum(r.ok for r in results)
    return {"queued": queued, "sent": sent, "failed": len(results) - sent, "postmortems": drafted}


def outbox_counts(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(Notification.state, func.count()).group_by(Notification.state)
    ).all()
    return {state: count for state, count in rows}
