"""When checks run: config sync into the checks table, and the claim of due slots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.probing import Reason
from core.rollups import queue_rerolls
from models.config import EventopsConfig
from models.db import affected
from models.tables import Check, Outcome

# How long past its timeout a dispatched slot may stay without an outcome before it is
# sent again: long enough to sit in a busy queue, short enough that a flushed Redis or a
# lost dispatch costs about a minute (timeout + this), at most one interval for the
# seed's checks (every 2 minutes or less often). A killed worker needs no lease: acks_late
# and reject_on_worker_lost give its batch back within seconds.
LEASE_GRACE = timedelta(seconds=60)
# A slot sent this many times without an outcome is recorded as missed, not retried forever.
MAX_DISPATCH_ATTEMPTS = 3


@dataclass(frozen=True)
class DueSlot:
    check_id: int
    slot: datetime
    attempt: int


def sync_checks(session: Session, config: EventopsConfig, now: datetime | None = None) -> dict:
    """Make the checks table match the config; checks gone from it are disabled, not deleted,
    so their history stays. Returns counts for the log."""
    now = now or utcnow()
    names = []
    for check in config.checks:
        names.append(check.name)
        # The same row the config was checked against (EventopsConfig.storage_problems).
        values = check.row(config.platform_url)
        statement = insert(Check).values(**values, next_due_at=now)
        statement = statement.on_conflict_do_update(
            index_elements=[Check.name],
            set_={
                **{k: statement.excluded[k] for k in values if k != "name"},
                # A shortened interval takes effect now, not after the old, longer wait.
                "next_due_at": text(
                    "LEAST(checks.next_due_at, CAST(:now AS timestamptz)"
                    " + make_interval(secs => excluded.interval_s))"
                ).bindparams(now=now),
            },
        )
        session.execute(statement)
    disabled = affected(
        session.execute(
            update(Check).where(Check.name.not_in(names), Check.enabled).values(enabled=False)
        )
    )
    return {"checks": len(names), "disabled": disabled}


_CLAIM_NEW = text(
    """
    WITH due AS (
        SELECT id, next_due_at AS slot, interval_s
        FROM checks
        WHERE enabled AND inflight_slot IS NULL AND next_due_at <= :now
        ORDER BY next_due_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE checks AS c SET
        inflight_slot = due.slot,
        dispatch_attempts = 1,
        lease_until = CAST(:now AS timestamptz) + make_interval(secs => c.timeout_s + :grace),
        -- the first grid point after now: a long outage never queues a burst of old slots
        next_due_at = due.slot + make_interval(secs => due.interval_s * (
            floor(extract(epoch FROM (CAST(:now AS timestamptz) - due.slot)) / due.interval_s) + 1
        ))
    FROM due
    WHERE c.id = due.id
    RETURNING c.id, due.slot, c.dispatch_attempts
    """
)

_CLAIM_LOST = text(
    """
    WITH lost AS (
        SELECT id FROM checks
        WHERE inflight_slot IS NOT NULL AND lease_until <= :now
        ORDER BY lease_until
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE checks AS c SET
        dispatch_attempts = c.dispatch_attempts + 1,
        lease_until = CAST(:now AS timestamptz) + make_interval(secs => c.timeout_s + :grace)
    FROM lost
    WHERE c.id = lost.id
    RETURNING c.id, c.inflight_slot, c.dispatch_attempts
    """
)


def claim_due_slots(
    session: Session, now: datetime | None = None, limit: int = 20_000
) -> list[DueSlot]:
    """Claim due slots (and slots whose dispatch was lost) for probing.

    Rows are locked with SKIP LOCKED and advanced in the same statement, so two beats or a
    redelivered tick never claim one slot twice. A slot sent MAX_DISPATCH_ATTEMPTS times
    without an outcome is written as a `missed` outcome instead of being sent again.
    """
    now = now or utcnow()
    params = {"now": now, "limit": limit, "grace": LEASE_GRACE.total_seconds()}
    claimed = [DueSlot(*row) for row in session.execute(_CLAIM_LOST, params)]
    resend = [s for s in claimed if s.attempt <= MAX_DISPATCH_ATTEMPTS]
    give_up = [s for s in claimed if s.attempt > MAX_DISPATCH_ATTEMPTS]
    if give_up:
        record_missed(session, give_up, now)
    params["limit"] = max(limit - len(resend), 0)
    fresh = (
        [DueSlot(*row) for row in session.execute(_CLAIM_NEW, params)] if params["limit"] else []
    )
    return resend + fresh


def record_missed(session: Session, slots: list[DueSlot], now: datetime) -> None:
    """Write `missed` outcomes for slots no worker finished, and free their checks."""
    session.execute(
        insert(Outcome)
        .values(
            [
                {
                    "check_id": s.check_id,
                    "slot": s.slot,
                    "observed_at": now,
                    "status": "missed",
                    "reason": Reason.PROBE_LOST,
                    "detail": f"dispatched {MAX_DISPATCH_ATTEMPTS} times without an outcome",
                }
                for s in slots
            ]
        )
        .on_conflict_do_nothing(constraint="uq_outcomes_check_slot")
    )
    # Written minutes after their slot: the slot's minute may be rolled up already.
    queue_rerolls(session, [(s.check_id, s.slot) for s in slots])
    for s in slots:
        session.execute(
            update(Check)
            .where(Check.id == s.check_id, Check.inflight_slot == s.slot)
            .values(inflight_slot=None, lease_until=None, dispatch_attempts=0)
        )


def request_probe_now(session: Session, name: str, now: datetime | None = None) -> bool:
    """Make a check due at once (the CLI's `checks run`); False if no such check."""
    now = now or utcnow()
    result = session.execute(
        update(Check).where(Check.name == name).values(next_due_at=now).returning(Check.id)
    )
    return result.first() is not None


def check_ids_by_name(session: Session) -> dict[str, int]:
    return {name: id_ for id_, name in session.execute(select(Check.id, Check.name))}
