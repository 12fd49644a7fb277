"""The results pipeline: write outcomes once, advance check state, open and resolve incidents."""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from core.clock import utcnow
from core.incidents import Problem, open_incident_id, raise_problem, resolve_problem
from core.logcontext import log_context
from core.probing import ProbeResult
from core.rollups import note_late_outcomes
from models.config import EventopsConfig
from models.tables import Check

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


FINGERPRINT_PREFIX = "check:"


def fingerprint_for_check(name: str) -> str:
    return f"{FINGERPRINT_PREFIX}{name}"


def problem_for_check(check: Check, result: ProbeResult, consecutive_failures: int) -> Problem:
    cause = result.reason or "failed"
    if result.detail:
        cause += f" ({result.detail})"
    return Problem(
        fingerprint=fingerprint_for_check(check.name),
        title=f"{check.name} is down",
        severity=check.severity,
        summary=f"{check.name}: {cause} after {consecutive_failures} consecutive failure(s)",
        labels={"check": check.name, "group": check.group_name},
        category=check.category,
        impact=check.impact,
        check_id=check.id,
        parents=[fingerprint_for_check(name) for name in check.depends_on],
    )


OutcomeKey = tuple[int, datetime]  # (check id, slot)


@dataclass
class LockedCheck:
    """The state of one check row, read under its lock, advanced in Python, written back."""

    id: int
    alert_threshold: int
    recovery_threshold: int
    status: str
    consecutive_failures: int
    consecutive_successes: int
    last_slot: datetime | None
    inflight_slot: datetime | None
    incident_open: bool
    # The newest outcome applied (None: nothing moved the state, the row keeps its own).
    latest: ProbeResult | None = None
    # Set when one of the batch's outcomes is the slot the dispatcher leased out.
    released: bool = False


@dataclass(frozen=True)
class CheckEvent:
    """An incident to open or resolve, with the check's status and failure count at that
    outcome."""

    kind: str  # "open" | "resolve"
    check_id: int
    result: ProbeResult
    status: str
    consecutive_failures: int


# The write path is set-based (bench P3): a fixed number of statements a batch, whatever its
# size, where the ORM spent a load, a flush and an UPDATE per check. Rows travel as one JSON
# parameter read back with json_to_recordset: measured against COPY, unnest() over arrays and
# a temporary table (whose truncation at every commit costs more than the rest), it came
# within 10 % of COPY in batches of 100 and keeps ON CONFLICT ... RETURNING.
_INSERT_OUTCOMES = """
    INSERT INTO outcomes (check_id, slot, observed_at, status, latency_ms, http_status,
                          reason, detail)
    SELECT check_id, slot, observed_at, status, latency_ms, http_status, reason, detail
    FROM json_to_recordset(%s::json) AS r(
        check_id integer, slot timestamptz, observed_at timestamptz, status text,
        latency_ms double precision, http_status smallint, reason text, detail text)
    ON CONFLICT ON CONSTRAINT uq_outcomes_check_slot DO NOTHING
    RETURNING check_id, slot
"""

# Locked in id order, so two batches touching the same checks cannot deadlock.
_LOCK_CHECKS = f"""
    SELECT c.id, c.alert_threshold, c.recovery_threshold, c.status,
           c.consecutive_failures, c.consecutive_successes, c.last_slot, c.inflight_slot,
           EXISTS (SELECT 1 FROM incidents AS i
                   WHERE i.fingerprint = '{FINGERPRINT_PREFIX}' || c.name
                     AND i.status <> 'resolved') AS incident_open
    FROM checks AS c
    WHERE c.id = ANY(%s)
    ORDER BY c.id
    FOR UPDATE OF c
"""

_UPDATE_CHECKS = """
    UPDATE checks AS c
    SET status = u.status,
        consecutive_failures = u.consecutive_failures,
        consecutive_successes = u.consecutive_successes,
        last_slot = u.last_slot,
        last_checked_at = CASE WHEN u.advanced THEN u.last_checked_at ELSE c.last_checked_at END,
        last_latency_ms = CASE WHEN u.advanced THEN u.last_latency_ms ELSE c.last_latency_ms END,
        last_reason = CASE WHEN u.advanced THEN u.last_reason ELSE c.last_reason END,
        inflight_slot = CASE WHEN u.released THEN NULL ELSE c.inflight_slot END,
        lease_until = CASE WHEN u.released THEN NULL ELSE c.lease_until END,
        dispatch_attempts = CASE WHEN u.released THEN 0 ELSE c.dispatch_attempts END
    FROM json_to_recordset(%s::json) AS u(
        id integer, status text, consecutive_failures integer, consecutive_successes integer,
        last_slot timestamptz, advanced boolean, last_checked_at timestamptz,
        last_latency_ms double precision, last_reason text, released boolean)
    WHERE c.id = u.id
"""


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
    # Driver-level SQL (exec_driver_sql: SQLAlchemy still wraps errors as DBAPIError, which
    # the tasks retry or defer on) on the session's connection: the ORM's pending changes
    # go first, in the same transaction.
    session.flush()
    connection = session.connection()
    batch = _one_per_key(_storable(r) for r in results)
    fresh_keys = insert_outcomes(connection, batch)
    summary.written = len(fresh_keys)
    summary.duplicates = len(results) - len(fresh_keys)
    # An outcome for a minute already rolled up queues that minute for a re-roll.
    note_late_outcomes(session, fresh_keys, config, now)
    fresh: dict[int, list[ProbeResult]] = defaultdict(list)
    for r in batch:
        if _key(r.check_id, r.slot) in fresh_keys:
            fresh[r.check_id].append(r)
    if not fresh:
        return summary

    locked = connection.exec_driver_sql(_LOCK_CHECKS, (sorted(fresh),))
    checks = [LockedCheck(*row) for row in locked]

    def act(event: CheckEvent) -> bool:
        return _raise_or_resolve(session, event, config, now, summary)

    for check in checks:
        advance_check(check, sorted(fresh[check.id], key=lambda r: r.slot), act)
    connection.exec_driver_sql(_UPDATE_CHECKS, (_json([_state_record(check) for check in checks]),))
    _expire_loaded_checks(session, {check.id for check in checks})
    return summary


def insert_outcomes(connection: Connection, results: Sequence[ProbeResult]) -> set[OutcomeKey]:
    """Store the outcomes not stored yet, in one statement; the keys of those written."""
    inserted = connection.exec_driver_sql(
        _INSERT_OUTCOMES, (_json([_outcome_record(r) for r in results]),)
    )
    return {_key(check_id, slot) for check_id, slot in inserted}


def advance_check(
    check: LockedCheck, results: list[ProbeResult], act: Callable[[CheckEvent], bool]
) -> None:
    """Apply one check's new outcomes (in slot order) to its state.

    An outcome that opens or resolves the check's incident is handed to `act` on the spot,
    which says whether the incident is open afterwards: a flapping incident may stay open
    through a resolve, and the outcomes after it must see that."""
    for result in results:
        if result.slot == check.inflight_slot:
            check.inflight_slot = None
            check.released = True
        # An older slot arriving late (a redelivery) is history, not news: it must not
        # move the state backwards.
        if result.status == "missed" or (check.last_slot and result.slot < check.last_slot):
            continue
        transition = advance(
            CheckState(check.status, check.consecutive_failures, check.consecutive_successes),
            result.ok,
            alert_threshold=check.alert_threshold,
            recovery_threshold=check.recovery_threshold,
            incident_open=check.incident_open,
        )
        check.status = transition.state.status
        check.consecutive_failures = transition.state.consecutive_failures
        check.consecutive_successes = transition.state.consecutive_successes
        check.last_slot = result.slot
        check.latest = result
        if transition.event is not None:
            check.incident_open = act(
                CheckEvent(
                    transition.event,
                    check.id,
                    result,
                    check.status,
                    check.consecutive_failures,
                )
            )


def _raise_or_resolve(
    session: Session,
    event: CheckEvent,
    config: EventopsConfig,
    now: datetime,
    summary: PipelineSummary,
) -> bool:
    """Open or resolve the check's incident; whether it is open afterwards."""
    check = session.get_one(Check, event.check_id)
    with log_context(check=check.name):
        verb = "opening" if event.kind == "open" else "resolving"
        log.info(
            "%s is %s (%s): %s its incident", check.name, event.status, event.result.reason, verb
        )
        if event.kind == "open":
            problem = problem_for_check(check, event.result, event.consecutive_failures)
            incident_id = raise_problem(session, problem, config, now)
            if incident_id is not None:
                summary.opened.append(incident_id)
                summary.urgent |= _pages_at_once(check.severity, config)
            return True  # opened now, or already open
        fingerprint = fingerprint_for_check(check.name)
        incident_id = resolve_problem(session, fingerprint, config, now, why="check passes")
        if incident_id is None:
            # Held open (flapping, back less than a flap window ago), or none was open.
            return open_incident_id(session, fingerprint) is not None
        summary.resolved.append(incident_id)
        summary.urgent = True
        return False


def _outcome_record(r: ProbeResult) -> dict[str, Any]:
    return {
        "check_id": r.check_id,
        "slot": r.slot.isoformat(),
        "observed_at": r.observed_at.isoformat(),
        "status": r.status,
        "latency_ms": r.latency_ms,
        "http_status": r.http_status,
        "reason": r.reason,
        "detail": r.detail,
    }


def _state_record(check: LockedCheck) -> dict[str, Any]:
    latest = check.latest
    return {
        "id": check.id,
        "status": check.status,
        "consecutive_failures": check.consecutive_failures,
        "consecutive_successes": check.consecutive_successes,
        "last_slot": check.last_slot.isoformat() if check.last_slot else None,
        "advanced": latest is not None,
        "last_checked_at": latest.observed_at.isoformat() if latest else None,
        "last_latency_ms": latest.latency_ms if latest else None,
        "last_reason": latest.reason if latest else None,
        "released": check.released,
    }


def _storable(result: ProbeResult) -> ProbeResult:
    """The outcome as Postgres can hold it: a hostile endpoint chooses the words a protocol
    error quotes, and NUL or a lone surrogate would fail the batch; a latency that is not a
    number would fail the JSON."""
    detail, latency = result.detail, result.latency_ms
    if latency is not None and not math.isfinite(latency):
        result = replace(result, latency_ms=None)
    if detail is None or (detail.isascii() and "\x00" not in detail):
        return result
    cleaned = detail.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return replace(result, detail=cleaned)


def _one_per_key(results: Iterable[ProbeResult]) -> list[ProbeResult]:
    """The first outcome of each (check, slot): a second one in the same batch is a duplicate,
    as it would be in the next batch, and must not count twice."""
    seen: set[OutcomeKey] = set()
    unique = []
    for r in results:
        key = _key(r.check_id, r.slot)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def _key(check_id: int, slot: datetime) -> OutcomeKey:
    # In UTC: an instant in a repeated DST hour, returned in a server's local zone, hashes
    # apart from the same instant sent in UTC (Python hashes fold=1 with the fold=0 offset).
    return (check_id, slot.astimezone(UTC))


def _json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, separators=(",", ":"), allow_nan=False)


def _expire_loaded_checks(session: Session, ids: set[int]) -> None:
    """A Check the caller already loaded in this session must not show its old state."""
    if not session.identity_map:
        return
    for check_id in ids:
        loaded = session.identity_map.get(identity_key(Check, check_id))
        if loaded is not None:
            session.expire(loaded)


def _pages_at_once(severity: str, config: EventopsConfig) -> bool:
    policy = config.policies[severity]  # type: ignore[index]
    return (
        bool(policy.steps)
        and not policy.digest
        and (policy.steps[0].after + policy.group_wait <= timedelta(0))
    )
