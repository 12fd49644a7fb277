"""The incident lifecycle: detected, classified, notified, acknowledged, resolved, reviewed.

Detectors (the check pipeline, the rule engine, the outbox) report a `Problem`; this room
decides whether it opens, reopens or joins an incident, and queues the escalation rows its
policy asks for. People acknowledge, annotate, resolve and reopen through the same functions,
from the CLI or the Python shell. Every change is an event on the incident's timeline.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.audit import audit
from core.clock import utcnow
from models.config import EventopsConfig, PolicyConfig
from models.tables import Escalation, Incident, IncidentEvent, Notification, NotificationItem

# A problem that comes back within this long of resolving reopens its incident instead of
# opening a new one; this many reopens inside the window mark the incident flapping, and a
# flapping incident stays open until the problem has stayed away for a whole window.
FLAP_WINDOW = timedelta(minutes=30)
FLAP_REOPENS = 3

# Escalation kinds that page about an incident being open; all stop once it is not.
PAGING_KINDS = ("opened", "promoted", "reopened", "reminder", "flapping")


@dataclass(frozen=True)
class Problem:
    """What a detector saw, classified: enough to open an incident and route its pages."""

    fingerprint: str
    title: str
    severity: str
    summary: str
    labels: dict[str, str] = field(default_factory=dict)
    category: str = "availability"
    impact: str | None = None
    check_id: int | None = None
    rule: str | None = None
    subject: str | None = None
    # Delay before the first page, overriding the policy's first step (a rule's own delay).
    escalate_after: timedelta | None = None
    # Fingerprints of what this depends on: while one is open, this problem pages nobody.
    parents: Sequence[str] = ()


class IncidentNotFound(LookupError):
    pass


def add_event(
    session: Session,
    incident_id: int,
    at: datetime,
    kind: str,
    *,
    actor: str = "eventops",
    detail: str | None = None,
) -> None:
    session.add(
        IncidentEvent(incident_id=incident_id, at=at, kind=kind, actor=actor, detail=detail)
    )


def queue_escalation(
    session: Session,
    incident_id: int,
    kind: str,
    due_at: datetime,
    group_key: str,
    step: int = 0,
) -> None:
    """Queue one escalation step; its (incident, step, kind) key makes queueing idempotent."""
    session.execute(
        insert(Escalation)
        .values(
            incident_id=incident_id,
            step=step,
            kind=kind,
            group_key=group_key,
            due_at=due_at,
            state="pending",
        )
        .on_conflict_do_nothing(constraint="uq_escalations_step")
    )


def group_key(labels: dict[str, str], severity: str, config: EventopsConfig) -> str:
    """Incidents with the same key are announced together: `critical|group=payments`."""
    parts = [f"{name}={labels.get(name, '')}" for name in config.notifications.group_by]
    return "|".join([severity, *parts])


def next_digest_at(now: datetime, config: EventopsConfig) -> datetime:
    """The next daily digest time, in the config's time zone."""
    zone = ZoneInfo(config.timezone)
    hour, minute = (int(part) for part in config.notifications.digest_at.split(":"))
    local = now.astimezone(zone)
    candidate = datetime.combine(local.date(), time(hour, minute), tzinfo=zone)
    if candidate <= local:
        candidate = datetime.combine(
            local.date() + timedelta(days=1), time(hour, minute), tzinfo=zone
        )
    return candidate.astimezone(now.tzinfo)


def open_incident_id(session: Session, fingerprint: str) -> int | None:
    """The problem's unresolved incident (at most one: a partial unique index), if any."""
    return session.scalar(
        select(Incident.id).where(
            Incident.fingerprint == fingerprint, Incident.status != "resolved"
        )
    )


def raise_problem(
    session: Session, problem: Problem, config: EventopsConfig, now: datetime | None = None
) -> int | None:
    """Open an incident for the problem, or reopen its recent one.

    Returns the incident id when something opened or reopened, None when the problem's
    incident was already open (the same problem never opens two incidents).
    """
    now = now or utcnow()
    if open_incident_id(session, problem.fingerprint) is not None:
        return None
    recent = session.scalars(
        select(Incident)
        .where(
            Incident.fingerprint == problem.fingerprint,
            Incident.status == "resolved",
            Incident.resolved_at >= now - FLAP_WINDOW,
        )
        .order_by(Incident.resolved_at.desc())
        .limit(1)
        .with_for_update()
    ).first()
    if recent is not None and recent.status == "resolved":
        _reopen(session, recent, config, now, by="eventops", why=problem.summary)
        return recent.id

    incident_id = session.execute(
        insert(Incident)
        .values(
            fingerprint=problem.fingerprint,
            check_id=problem.check_id,
            rule=problem.rule,
            subject=problem.subject,
            title=problem.title,
            severity=problem.severity,
            category=problem.category,
            impact=problem.impact,
            labels={**problem.labels, "severity": problem.severity},
            status="open",
            opened_at=now,
            summary=problem.summary,
            escalate_after_s=(
                problem.escalate_after.total_seconds()
                if problem.escalate_after is not None
                else None
            ),
        )
        .on_conflict_do_nothing(
            index_elements=["fingerprint"], index_where=text("status <> 'resolved'")
        )
        .returning(Incident.id)
    ).scalar()
    if incident_id is None:
        return None  # a concurrent batch opened it first
    add_event(session, incident_id, now, "opened", detail=problem.summary)
    add_event(
        session,
        incident_id,
        now,
        "classified",
        detail=f"{problem.severity}, {problem.category}"
        + (f"; impact: {problem.impact}" if problem.impact else ""),
    )
    parent = _open_parent(session, problem.parents)
    incident = session.get(Incident, incident_id)
    assert incident is not None
    if parent is not None:
        incident.parent_incident_id = parent.id
        add_event(
            session,
            incident_id,
            now,
            "suppressed",
            detail=f"depends on #{parent.id} ({parent.title}), which is open",
        )
        return incident_id
    queue_opening(session, incident, config, now, problem.escalate_after)
    return incident_id


def _open_parent(session: Session, fingerprints: Sequence[str]) -> Incident | None:
    if not fingerprints:
        return None
    return session.scalars(
        select(Incident)
        .where(Incident.fingerprint.in_(fingerprints), Incident.status != "resolved")
        .order_by(Incident.opened_at)
        .limit(1)
    ).first()


def policy_for(incident: Incident, config: EventopsConfig) -> PolicyConfig:
    return config.policies[incident.severity]  # type: ignore[index]


def queue_opening(
    session: Session,
    incident: Incident,
    config: EventopsConfig,
    now: datetime,
    escalate_after: timedelta | None = None,
    kind: str = "opened",
) -> None:
    """Queue the policy's chain for a newly open incident (or a promoted one: kind promoted)."""
    policy = policy_for(incident, config)
    key = group_key(incident.labels, incident.severity, config)
    if escalate_after is None and incident.escalate_after_s is not None:
        escalate_after = timedelta(seconds=incident.escalate_after_s)
    if policy.digest:
        queue_escalation(session, incident.id, "digest", next_digest_at(now, config), "digest")
        return
    if not policy.steps:
        add_event(
            session,
            incident.id,
            now,
            "not routed",
            detail=f"the {incident.severity} policy has no steps",
        )
    shift = timedelta(0)
    if escalate_after is not None and policy.steps:
        shift = escalate_after - policy.steps[0].after
    for index, step in enumerate(policy.steps):
        wait = policy.group_wait if index == 0 else timedelta(0)
        queue_escalation(session, incident.id, kind, now + step.after + shift + wait, key, index)
    if policy.promote_after is not None and incident.severity != "critical":
        queue_escalation(session, incident.id, "promote", now + policy.promote_after, key)
    if policy.stakeholders and kind == "opened":
        queue_escalation(session, incident.id, "status-opened", now + policy.group_wait, key)


def _reopen(
    session: Session,
    incident: Incident,
    config: EventopsConfig,
    now: datetime,
    *,
    by: str,
    why: str,
) -> None:
    incident.status = "open"
    incident.resolved_at = None
    incident.acknowledged_at = None
    incident.acknowledged_by = None
    incident.reopen_count += 1
    incident.reopened_at = now
    incident.postmortem = None  # the draft described an ending that did not hold
    add_event(session, incident.id, now, "reopened", actor=by, detail=why)
    if incident.flapping:
        return  # already announced as flapping; the people on it know
    policy = policy_for(incident, config)
    key = group_key(incident.labels, incident.severity, config)
    first_delay = policy.steps[0].after if policy.steps else timedelta(0)
    if incident.reopen_count >= FLAP_REOPENS:
        incident.flapping = True
        add_event(
            session,
            incident.id,
            now,
            "flapping",
            detail=f"reopened {incident.reopen_count} times; held open until it settles",
        )
        queue_escalation(session, incident.id, "flapping", now + first_delay, key)
        return
    queue_escalation(
        session, incident.id, "reopened", now + first_delay, key, incident.reopen_count
    )


def resolve_problem(
    session: Session,
    fingerprint: str,
    config: EventopsConfig,
    now: datetime | None = None,
    why: str = "the problem cleared",
) -> int | None:
    """The detector sees the problem gone: resolve its incident, unless it is flapping and
    came back less than a flap window ago. Returns the resolved incident's id."""
    now = now or utcnow()
    incident = session.scalars(
        select(Incident)
        .where(Incident.fingerprint == fingerprint, Incident.status != "resolved")
        .with_for_update()
    ).first()
    if incident is None:
        return None
    if incident.flapping and incident.reopened_at and now - incident.reopened_at < FLAP_WINDOW:
        return None
    return incident.id if _resolve(session, incident, config, now, by="eventops", why=why) else None


def _resolve(
    session: Session,
    incident: Incident,
    config: EventopsConfig,
    now: datetime,
    *,
    by: str,
    why: str,
) -> bool:
    if incident.status == "resolved":
        return False
    incident.status = "resolved"
    incident.resolved_at = now
    add_event(session, incident.id, now, "resolved", actor=by, detail=why)
    session.execute(
        update(Escalation)
        .where(
            Escalation.incident_id == incident.id,
            Escalation.state == "pending",
            Escalation.kind.in_([*PAGING_KINDS, "promote"]),
        )
        .values(state="cancelled")
    )
    _withdraw_stale_pages(session, incident.id)
    key = group_key(incident.labels, incident.severity, config)
    if incident.notified_at is not None:
        queue_escalation(session, incident.id, "resolved", now, key, incident.reopen_count)
    told_stakeholders = session.scalar(
        select(func.count())
        .select_from(Escalation)
        .where(
            Escalation.incident_id == incident.id,
            Escalation.kind == "status-opened",
            Escalation.state == "fired",
        )
    )
    if told_stakeholders:
        queue_escalation(session, incident.id, "status-resolved", now, key, incident.reopen_count)
    _release_children(session, incident, config, now)
    return True


def _withdraw_stale_pages(session: Session, incident_id: int) -> None:
    """Pages still retrying for this incident are void once every incident they carry is
    resolved: nobody needs to be woken for a problem that is over."""
    carried = select(NotificationItem.notification_id).where(
        NotificationItem.incident_id == incident_id, NotificationItem.kind.in_(PAGING_KINDS)
    )
    still_open = (
        select(NotificationItem.id)
        .join(Incident, Incident.id == NotificationItem.incident_id)
        .where(
            NotificationItem.notification_id == Notification.id,
            Incident.status != "resolved",
        )
        .exists()
    )
    session.execute(
        update(Notification)
        .where(Notification.id.in_(carried), Notification.state == "pending", ~still_open)
        .values(state="cancelled", last_error="withdrawn: every incident it carries resolved")
    )


def _release_children(
    session: Session, parent: Incident, config: EventopsConfig, now: datetime
) -> None:
    """Children held back by this incident now speak for themselves."""
    children = session.scalars(
        select(Incident).where(Incident.parent_incident_id == parent.id, Incident.status == "open")
    ).all()
    for child in children:
        same_check = child.labels.get("check") and (
            child.labels.get("check") == parent.labels.get("check")
        )
        if same_check:
            # A rule breach on a check (error rate, uptime) whose own outage just ended is
            # that outage's echo: its windows still hold the failures. It stays quiet and
            # resolves when its rule clears.
            add_event(
                session,
                child.id,
                now,
                "stays suppressed",
                detail=f"#{parent.id} was the same check's outage",
            )
            continue
        add_event(
            session,
            child.id,
            now,
            "unsuppressed",
            detail=f"#{parent.id} resolved; this one still fails",
        )
        queue_opening(session, child, config, now)


@contextmanager
def _session(session: Session | None) -> Iterator[Session]:
    if session is not None:
        yield session
        return
    from models.db import session_scope

    with session_scope() as own:
        yield own


def _running_config() -> EventopsConfig:
    """The process's config, for calls from the shell that do not pass one."""
    from workers.settings import get_config

    return get_config()


def _get(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id, with_for_update=True)
    if incident is None:
        raise IncidentNotFound(f"no incident #{incident_id}")
    return incident


def acknowledge(
    incident_id: int,
    by: str,
    *,
    session: Session | None = None,
    now: datetime | None = None,
) -> bool:
    """Someone is on it: pending pages and reminders for it stop. False if it was not open."""
    now = now or utcnow()
    with _session(session) as db:
        incident = _get(db, incident_id)
        if incident.status != "open":
            return False
        incident.status = "acknowledged"
        incident.acknowledged_at = now
        incident.acknowledged_by = by
        add_event(db, incident_id, now, "acknowledged", actor=by)
        audit(db, by, "incident.acknowledge", f"incident:{incident_id}", at=now)
        return True


def resolve(
    incident_id: int,
    by: str,
    config: EventopsConfig | None = None,
    *,
    why: str = "resolved by hand",
    session: Session | None = None,
    now: datetime | None = None,
) -> bool:
    """Resolve by hand (flapping or not). If the problem persists, it reopens."""
    now = now or utcnow()
    with _session(session) as db:
        done = _resolve(db, _get(db, incident_id), config or _running_config(), now, by=by, why=why)
        if done:
            audit(db, by, "incident.resolve", f"incident:{incident_id}", {"why": why}, at=now)
        return done


def reopen(
    incident_id: int,
    by: str,
    config: EventopsConfig | None = None,
    *,
    why: str = "reopened by hand",
    session: Session | None = None,
    now: datetime | None = None,
) -> bool:
    """Reopen a resolved incident: it was not fixed after all. Pages again."""
    now = now or utcnow()
    with _session(session) as db:
        incident = _get(db, incident_id)
        if incident.status != "resolved":
            return False
        _reopen(db, incident, config or _running_config(), now, by=by, why=why)
        audit(db, by, "incident.reopen", f"incident:{incident_id}", {"why": why}, at=now)
        return True


def note(
    incident_id: int,
    text: str,
    by: str,
    config: EventopsConfig | None = None,
    *,
    public: bool = False,
    session: Session | None = None,
    now: datetime | None = None,
) -> None:
    """Add a note to the timeline; a public note is a status update for the stakeholders."""
    now = now or utcnow()
    settings = config or _running_config()
    with _session(session) as db:
        incident = _get(db, incident_id)
        add_event(
            db, incident_id, now, "status update" if public else "note", actor=by, detail=text
        )
        audit(db, by, "incident.note", f"incident:{incident_id}", {"public": public}, at=now)
        if public and policy_for(incident, settings).stakeholders:
            updates = (
                db.scalar(
                    select(func.count())
                    .select_from(Escalation)
                    .where(
                        Escalation.incident_id == incident_id, Escalation.kind == "status-update"
                    )
                )
                or 0
            )
            key = group_key(incident.labels, incident.severity, settings)
            queue_escalation(db, incident_id, "status-update", now, key, updates)
