"""The breach-notification clock.

When an incident that marks a data breach opens (labels matching `compliance.breach.matchers`,
or a fingerprint starting with one of `fingerprint_prefixes`: H1's breach detector raises
`security:breach...` incidents labelled `category=data_breach`), a clock starts: notify the
regulator within `notify_within` (72 h: GDPR art. 33; the NZ Privacy Act's "as soon as
practicable" is held to the same target). The clock has an incident of its own,
`compliance:breach-notify:<id>` (warning), so people can acknowledge the notification work
apart from the breach. As time runs down it reminds (an event on both incidents and a page
through the escalation ledger) at each `remind_at_left`; past the deadline it opens a
critical `compliance:breach-overdue:<id>`. Recording the notification (or that none is
needed) stops the clock and resolves both clock incidents; every step is audited.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.audit import audit
from core.clock import utcnow
from core.incidents import (
    Problem,
    add_event,
    group_key,
    queue_escalation,
    raise_problem,
    resolve_problem,
)
from core.silences import matches
from models.compliance import BreachClock
from models.config import EventopsConfig
from models.config_compliance import BreachClockConfig
from models.tables import Incident

NOTIFY_PREFIX = "compliance:breach-notify:"
OVERDUE_PREFIX = "compliance:breach-overdue:"
# How far back a breach incident without a clock still gets one (a late-starting worker).
LOOKBACK = timedelta(days=30)
# Escalation steps of clock reminders start here, clear of the policy's own step numbers.
REMINDER_STEP = 1000


def is_breach(incident: Incident, cfg: BreachClockConfig) -> bool:
    if incident.fingerprint.startswith((NOTIFY_PREFIX, OVERDUE_PREFIX)):
        return False
    if any(incident.fingerprint.startswith(p) for p in cfg.fingerprint_prefixes):
        return True
    return bool(cfg.matchers) and matches(cfg.matchers, incident.labels or {})


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g} h"


def start_clocks(session: Session, config: EventopsConfig, now: datetime) -> list[int]:
    """A clock for every breach incident that has none yet; returns their incident ids."""
    cfg = config.compliance.breach
    candidates = session.scalars(
        select(Incident)
        .outerjoin(BreachClock, BreachClock.incident_id == Incident.id)
        .where(BreachClock.incident_id.is_(None), Incident.opened_at >= now - LOOKBACK)
        .order_by(Incident.id)
    ).all()
    started = []
    for incident in candidates:
        if not is_breach(incident, cfg):
            continue
        deadline = incident.opened_at + cfg.notify_within
        inserted = session.execute(
            insert(BreachClock)
            .values(
                incident_id=incident.id,
                started_at=incident.opened_at,
                deadline_at=deadline,
                reminded=[],
            )
            .on_conflict_do_nothing(index_elements=["incident_id"])
            .returning(BreachClock.incident_id)
        ).scalar()
        if inserted is None:
            continue
        detail = f"notify the regulator by {deadline:%Y-%m-%d %H:%M} UTC"
        add_event(session, incident.id, now, "breach clock started", detail=detail)
        audit(
            session,
            "eventops",
            "breach.clock.start",
            f"incident:{incident.id}",
            {"deadline": deadline.isoformat()},
            at=now,
        )
        raise_problem(
            session,
            Problem(
                fingerprint=f"{NOTIFY_PREFIX}{incident.id}",
                title=f"Data breach #{incident.id}: notify the regulator by "
                f"{deadline:%Y-%m-%d %H:%M} UTC",
                severity="warning",
                summary=f"{incident.title}. GDPR art. 33: within 72 h of becoming aware; NZ "
                "Privacy Act 2020 s 114: as soon as practicable. Record it with "
                f"`eventops compliance breach notified {incident.id}`.",
                labels={"category": "breach-notification", "incident": str(incident.id)},
                category="security",
                subject=f"incident:{incident.id}",
            ),
            config,
            now,
        )
        started.append(incident.id)
    return started


def run_clocks(session: Session, config: EventopsConfig, now: datetime) -> dict[str, int]:
    """Remind as each threshold passes (once each); open the overdue incident at the end."""
    cfg = config.compliance.breach
    clocks = session.scalars(
        select(BreachClock)
        .where(BreachClock.stopped_at.is_(None))
        .order_by(BreachClock.incident_id)
        .with_for_update(skip_locked=True)
    ).all()
    reminders = overdue = 0
    thresholds = sorted(cfg.remind_at_left, reverse=True)
    for clock in clocks:
        left = clock.deadline_at - now
        due = [t for t in thresholds if left <= t and t.total_seconds() not in clock.reminded]
        if due and left > timedelta(0):
            threshold = min(due)  # several passed while we were away: say the latest once
            clock.reminded = [*clock.reminded, *(t.total_seconds() for t in due)]
            reminders += 1
            _remind(session, config, clock, left, threshold, thresholds.index(threshold), now)
        if left <= timedelta(0) and clock.overdue_at is None:
            clock.overdue_at = now
            overdue += 1
            _overdue(session, config, clock, now)
    return {"clocks": len(clocks), "reminders": reminders, "overdue": overdue}


def _remind(
    session: Session,
    config: EventopsConfig,
    clock: BreachClock,
    left: timedelta,
    threshold: timedelta,
    index: int,
    now: datetime,
) -> None:
    detail = (
        f"{_hours(left)} left to notify the regulator (deadline "
        f"{clock.deadline_at:%Y-%m-%d %H:%M} UTC; reminder at {_hours(threshold)} left)"
    )
    add_event(session, clock.incident_id, now, "breach clock", detail=detail)
    notify = session.scalars(
        select(Incident).where(
            Incident.fingerprint == f"{NOTIFY_PREFIX}{clock.incident_id}",
            Incident.status != "resolved",
        )
    ).first()
    if notify is not None:
        add_event(session, notify.id, now, "breach clock", detail=detail)
        key = group_key(notify.labels, notify.severity, config)
        queue_escalation(session, notify.id, "reminder", now, key, REMINDER_STEP + index)


def _overdue(session: Session, config: EventopsConfig, clock: BreachClock, now: datetime) -> None:
    detail = f"the deadline {clock.deadline_at:%Y-%m-%d %H:%M} UTC passed without a notification"
    add_event(session, clock.incident_id, now, "breach notification overdue", detail=detail)
    raise_problem(
        session,
        Problem(
            fingerprint=f"{OVERDUE_PREFIX}{clock.incident_id}",
            title=f"Data breach #{clock.incident_id}: regulator notification overdue",
            severity="critical",
            summary=detail,
            labels={"category": "breach-notification", "incident": str(clock.incident_id)},
            category="security",
            subject=f"incident:{clock.incident_id}",
        ),
        config,
        now,
    )


def tick(session: Session, config: EventopsConfig, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    started = start_clocks(session, config, now)
    return {"started": len(started), **run_clocks(session, config, now)}


class ClockNotFound(LookupError):
    pass


def stop_clock(
    session: Session,
    config: EventopsConfig,
    incident_id: int,
    *,
    by: str,
    outcome: str,
    note: str = "",
    now: datetime | None = None,
) -> BreachClock:
    """Record that the regulator was notified (`notified`) or that the breach is not
    notifiable (`not-notifiable`, with the reason in `note`); resolves the clock's incidents."""
    if outcome not in ("notified", "not-notifiable"):
        raise ValueError("outcome must be notified or not-notifiable")
    if outcome == "not-notifiable" and not note.strip():
        raise ValueError("say why the breach is not notifiable (note)")
    now = now or utcnow()
    clock = session.get(BreachClock, incident_id, with_for_update=True)
    if clock is None:
        raise ClockNotFound(f"no breach clock for incident #{incident_id}")
    if clock.stopped_at is not None:
        return clock
    clock.stopped_at, clock.stopped_by, clock.outcome, clock.note = now, by, outcome, note
    late = now > clock.deadline_at
    detail = (
        f"{outcome} by {by}"
        + (" (after the deadline)" if late else "")
        + (f": {note}" if note else "")
    )
    add_event(session, incident_id, now, "breach clock stopped", actor=by, detail=detail)
    audit(
        session,
        by,
        f"breach.{outcome}",
        f"incident:{incident_id}",
        {"note": note, "late": late, "deadline": clock.deadline_at.isoformat()},
        at=now,
    )
    for prefix in (NOTIFY_PREFIX, OVERDUE_PREFIX):
        resolve_problem(session, f"{prefix}{incident_id}", config, now, why=detail)
    return clock
