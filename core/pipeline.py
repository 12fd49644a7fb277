"""The results pipeline: write outcomes once, advance check state, open and resolve incidents."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.probing import ProbeResult
from models.tables import Check, Escalation, Incident, IncidentEvent, Outcome


@dataclass(frozen=True)
class CheckState:
    status: str  # unknown | up | failing | down
    consecutive_failures: int
    consecutive_successes: int


@dataclass(frozen=True)
class Transition:
    state: CheckState
    event: str | None  # "open" | "resolve" | None


def advance(
    state: CheckState,
    ok: bool,
    *,
    alert_threshold: int,
    recovery_threshold: int,
    incident_open: bool,
) -> Transition:
    """One outcome's effect on a check: N failures in a row open, M successes in a row resolve.

    `failing` is a check that failed fewer times than its threshold (Uptime Kuma's
    "pending"); `down` is a check with an open incident.
    """
    if ok:
        successes = state.consecutive_successes + 1
        if incident_open and successes < recovery_threshold:
            return Transition(CheckState("down", 0, successes), None)
        return Transition(CheckState("up", 0, successes), "resolve" if incident_open else None)
    failures = state.consecutive_failures + 1
    if incident_open:
        return Transition(CheckState("down", failures, 0), None)
    if failures >= alert_threshold:
        return Transition(CheckState("down", failures, 0), "open")
    return Transition(CheckState("failing", failures, 0), None)


@dataclass
class PipelineSummary:
    written: int = 0
    duplicates: int = 0
    opened: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    # True when an escalation became due at once: the caller kicks the sweeper rather than
    # waiting for its next tick, which keeps detection-to-page latency under a second.
    urgent: bool = False

    def to_json(self) -> dict:
        return {
            "written": self.written,
            "duplicates": self.duplicates,
            "opened": self.opened,
            "resolved": self.resolved,
        }


def fingerprint_for_check(check_id: int) -> str:
    return f"check:{check_id}"


def record_outcomes(
    session: Session,
    results: Sequence[ProbeResult],
    escalation_delays: Mapping[str, timedelta | None],
    now: datetime | None = None,
) -> PipelineSummary:
    """Persist a batch of outcomes and apply their effects, in the caller's transaction.

    Only outcomes that were not already stored have effects, so a redelivered batch changes
    nothing. `escalation_delays` maps a severity to the delay before its first notification
    (None: no immediate escalation, e.g. info alerts that wait for the digest).
    """
    now = now or utcnow()
    summary = PipelineSummary()
    if not results:
        return summary
    inserted = session.execute(
        insert(Outcome)
        .values(
            [
                {
                    "check_id": r.check_id,
                    "slot": r.slot,
                    "observed_at": r.observed_at,
                    "status": r.status,
                    "latency_ms": r.latency_ms,
                    "http_status": r.http_status,
                    "reason": r.reason,
                    "detail": r.detail,
                }
                for r in results
            ]
        )
        .on_conflict_do_nothing(constraint="uq_outcomes_check_slot")
        .returning(Outcome.check_id, Outcome.slot)
    ).all()
    fresh_keys = {(row.check_id, row.slot) for row in inserted}
    summary.written = len(fresh_keys)
    summary.duplicates = len(results) - len(fresh_keys)
    fresh: dict[int, list[ProbeResult]] = defaultdict(list)
    for r in results:
        if (r.check_id, r.slot) in fresh_keys:
            fresh[r.check_id].append(r)
    if not fresh:
        return summary

    # Lock in id order so two batches touching the same checks cannot deadlock.
    checks = session.scalars(
        select(Check).where(Check.id.in_(fresh)).order_by(Check.id).with_for_update()
    ).all()
    open_incidents = dict(
        session.execute(
            select(Incident.check_id, Incident.id).where(
                Incident.check_id.in_(fresh),
                Incident.status != "resolved",
                Incident.fingerprint.like("check:%"),
            )
        ).all()
    )
    for check in checks:
        _apply(
            session,
            check,
            sorted(fresh[check.id], key=lambda r: r.slot),
            open_incidents.get(check.id),
            escalation_delays,
            now,
            summary,
        )
    return summary


def _apply(
    session: Session,
    check: Check,
    results: list[ProbeResult],
    incident_id: int | None,
    escalation_delays: Mapping[str, timedelta | None],
    now: datetime,
    summary: PipelineSummary,
) -> None:
    for result in results:
        if result.slot == check.inflight_slot:
            check.inflight_slot = None
            check.lease_until = None
            check.dispatch_attempts = 0
        # An older slot arriving late (a redelivery) is history, not news: it must not
        # move the state backwards.
        if result.status == "missed" or (check.last_slot and result.slot < check.last_slot):
            continue
        transition = advance(
            CheckState(check.status, check.consecutive_failures, check.consecutive_successes),
            result.ok,
            alert_threshold=check.alert_threshold,
            recovery_threshold=check.recovery_threshold,
            incident_open=incident_id is not None,
        )
        check.status = transition.state.status
        check.consecutive_failures = transition.state.consecutive_failures
        check.consecutive_successes = transition.state.consecutive_successes
        check.last_slot = result.slot
        check.last_checked_at = result.observed_at
        check.last_latency_ms = result.latency_ms
        check.last_reason = result.reason
        if transition.event == "open":
            incident_id = open_incident(session, check, result, escalation_delays, now)
            if incident_id is not None:
                summary.opened.append(incident_id)
                delay = escalation_delays.get(check.severity)
                summary.urgent |= delay is not None and delay <= timedelta(0)
        elif transition.event == "resolve" and incident_id is not None:
            if resolve_incident(session, incident_id, now, by="eventops", why="check passes"):
                summary.resolved.append(incident_id)
                summary.urgent = True
            incident_id = None


def open_incident(
    session: Session,
    check: Check,
    result: ProbeResult,
    escalation_delays: Mapping[str, timedelta | None],
    now: datetime,
) -> int | None:
    """Open the check's incident and queue its first escalation step; None if already open."""
    cause = result.reason or "failed"
    if result.detail:
        cause += f" ({result.detail})"
    incident_id = session.execute(
        insert(Incident)
        .values(
            fingerprint=fingerprint_for_check(check.id),
            check_id=check.id,
            title=f"{check.name} is down",
            severity=check.severity,
            status="open",
            opened_at=now,
            summary=f"{check.name}: {cause} after {check.consecutive_failures} "
            f"consecutive failure(s)",
        )
        .on_conflict_do_nothing(
            index_elements=["fingerprint"], index_where=text("status <> 'resolved'")
        )
        .returning(Incident.id)
    ).scalar()
    if incident_id is None:
        return None
    add_event(session, incident_id, now, "opened", detail=cause)
    delay = escalation_delays.get(check.severity)
    if delay is not None:
        queue_escalation(session, incident_id, "opened", now + delay)
    return incident_id


def resolve_incident(
    session: Session, incident_id: int, now: datetime, *, by: str, why: str
) -> bool:
    """Resolve an incident if it is not already; pending first pages are cancelled, and a
    resolution notice is queued only where someone was told it opened."""
    row = session.execute(
        update(Incident)
        .where(Incident.id == incident_id, Incident.status != "resolved")
        .values(status="resolved", resolved_at=now)
        .returning(Incident.notified_at)
    ).first()
    if row is None:
        return False
    add_event(session, incident_id, now, "resolved", actor=by, detail=why)
    session.execute(
        update(Escalation)
        .where(
            Escalation.incident_id == incident_id,
            Escalation.kind == "opened",
            Escalation.state == "pending",
        )
        .values(state="cancelled")
    )
    if row.notified_at is not None:
        queue_escalation(session, incident_id, "resolved", now)
    return True


def queue_escalation(
    session: Session, incident_id: int, kind: str, due_at: datetime, step: int = 0
) -> None:
    session.execute(
        insert(Escalation)
        .values(incident_id=incident_id, step=step, kind=kind, due_at=due_at, state="pending")
        .on_conflict_do_nothing(constraint="uq_escalations_step")
    )


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
