"""The results pipeline: write outcomes once, advance check state, open and resolve incidents."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.incidents import Problem, raise_problem, resolve_problem
from core.logcontext import log_context
from core.probing import ProbeResult
from core.rollups import note_late_outcomes
from models.config import EventopsConfig
from models.tables import Check, Incident, Outcome

log = logging.getLogger(__name__)


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


def fingerprint_for_check(name: str) -> str:
    return f"check:{name}"


def problem_for_check(check: Check, result: ProbeResult) -> Problem:
    cause = result.reason or "failed"
    if result.detail:
        cause += f" ({result.detail})"
    return Problem(
        fingerprint=fingerprint_for_check(check.name),
        title=f"{check.name} is down",
        severity=check.severity,
        summary=f"{check.name}: {cause} after {check.consecutive_failures} consecutive failure(s)",
        labels={"check": check.name, "group": check.group_name},
        category=check.category,
        impact=check.impact,
        check_id=check.id,
        parents=[fingerprint_for_check(name) for name in check.depends_on],
    )


def record_outcomes(
    session: Session,
    results: Sequence[ProbeResult],
    config: EventopsConfig,
    now: datetime | None = None,
) -> PipelineSummary:
    """Persist a batch of outcomes and apply their effects, in the caller's transaction.

    Only outcomes that were not already stored have effects, so a redelivered batch changes
    nothing.
    """
    now = now or utcnow()
    summary = PipelineSummary()
    if not results:
        return summary
    # Parameters as a list (executemany, SQLAlchemy's "insertmanyvalues"), not .values([...]):
    # one cached statement instead of compiling a 100-row VALUES each batch (3x less CPU per
    # row, bench P3).
    inserted = session.execute(
        insert(Outcome)
        .on_conflict_do_nothing(constraint="uq_outcomes_check_slot")
        .returning(Outcome.check_id, Outcome.slot),
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
        ],
    ).all()
    fresh_keys = {(row.check_id, row.slot) for row in inserted}
    summary.written = len(fresh_keys)
    summary.duplicates = len(results) - len(fresh_keys)
    # An outcome for a minute already rolled up queues that minute for a re-roll.
    note_late_outcomes(session, fresh_keys, config, now)
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
    open_fingerprints = set(
        session.scalars(
            select(Incident.fingerprint).where(
                Incident.check_id.in_(fresh),
                Incident.status != "resolved",
                Incident.fingerprint.like("check:%"),
            )
        )
    )
    for check in checks:
        results_in_order = sorted(fresh[check.id], key=lambda r: r.slot)
        with log_context(check=check.name):
            _apply(session, check, results_in_order, open_fingerprints, config, now, summary)
    return summary


def _apply(
    session: Session,
    check: Check,
    results: list[ProbeResult],
    open_fingerprints: set[str],
    config: EventopsConfig,
    now: datetime,
    summary: PipelineSummary,
) -> None:
    fingerprint = fingerprint_for_check(check.name)
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
            incident_open=fingerprint in open_fingerprints,
        )
        check.status = transition.state.status
        check.consecutive_failures = transition.state.consecutive_failures
        check.consecutive_successes = transition.state.consecutive_successes
        check.last_slot = result.slot
        check.last_checked_at = result.observed_at
        check.last_latency_ms = result.latency_ms
        check.last_reason = result.reason
        if transition.event:
            verb = "opening" if transition.event == "open" else "resolving"
            log.info(
                "%s is %s (%s): %s its incident", check.name, check.status, result.reason, verb
            )
        if transition.event == "open":
            incident_id = raise_problem(session, problem_for_check(check, result), config, now)
            open_fingerprints.add(fingerprint)
            if incident_id is not None:
                summary.opened.append(incident_id)
                summary.urgent |= _pages_at_once(check.severity, config)
        elif transition.event == "resolve":
            incident_id = resolve_problem(session, fingerprint, config, now, why="check passes")
            if incident_id is not None:
                open_fingerprints.discard(fingerprint)
                summary.resolved.append(incident_id)
                summary.urgent = True


def _pages_at_once(severity: str, config: EventopsConfig) -> bool:
    policy = config.policies[severity]  # type: ignore[index]
    return (
        bool(policy.steps)
        and not policy.digest
        and (policy.steps[0].after + policy.group_wait <= timedelta(0))
    )
