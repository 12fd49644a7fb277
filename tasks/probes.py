"""Probe tasks: the dispatch tick that claims due slots, and the batch that probes them."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from core.pipeline import record_outcomes
from core.probing import ProbeTarget, probe_all
from core.schedule import claim_due_slots
from models.db import session_scope
from models.tables import Check
from tasks.pipeline import record_outcomes_later
from tasks.retry import PROBE_FAULTS
from workers import runtime
from workers.app import app
from workers.settings import get_config, get_settings

log = logging.getLogger(__name__)


@app.task(
    name="probes.dispatch_due",
    soft_time_limit=20,
    time_limit=30,
    autoretry_for=PROBE_FAULTS,
    retry_backoff=True,
    max_retries=3,
)
def dispatch_due() -> dict[str, int]:
    """Claim every due slot and fan the slots out in batches of probes."""
    settings = get_settings()
    with session_scope() as session:
        slots = claim_due_slots(session, limit=settings.dispatch_limit)
    size = settings.probe_batch_size
    batches = [slots[i : i + size] for i in range(0, len(slots), size)]
    for batch in batches:
        run_batch.delay([[s.check_id, s.slot.isoformat()] for s in batch])
    # `resent`: slots whose earlier dispatch was lost (lease ran out), sent again.
    resent = sum(1 for s in slots if s.attempt > 1)
    if slots:
        # The tick itself logs at DEBUG (beat_schedule.ROUTINE_TASKS); work handed out is
        # said here, and the fault tests count the slots from this line.
        log.info(
            "dispatched %d due slots in %d batches (%d sent again)",
            len(slots),
            len(batches),
            resent,
        )
    return {"claimed": len(slots), "resent": resent, "batches": len(batches)}


@app.task(
    name="probes.run_batch",
    soft_time_limit=150,
    time_limit=180,
    autoretry_for=PROBE_FAULTS,
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=5,
)
def run_batch(slots: list[list]) -> dict:
    """Probe a batch of (check id, slot) pairs concurrently and record the outcomes."""
    targets = load_targets(
        [(int(check_id), datetime.fromisoformat(slot)) for check_id, slot in slots]
    )
    results = runtime.run(probe_all(runtime.http_client(), targets))
    try:
        with session_scope() as session:
            summary = record_outcomes(session, results, get_config())
    except DBAPIError:
        # Postgres went away while we probed: keep the outcomes, write them when it is back.
        record_outcomes_later.delay([r.to_json() for r in results])
        return {"probed": len(results), "deferred": len(results)}
    if summary.duplicates:
        log.info(
            "%d of %d outcomes already recorded (a redelivered batch): their effects kept once",
            summary.duplicates,
            len(results),
        )
    if summary.urgent:
        from tasks.escalation import sweep

        sweep.delay()
    return {
        "probed": len(results),
        "down": sum(not r.ok for r in results),
        **summary.to_json(),
    }


def load_targets(slots: list[tuple[int, datetime]]) -> list[ProbeTarget]:
    """What to probe, read from Postgres: task arguments carry ids, never URLs or secrets.

    Columns, not ORM objects: loading 500 `Check` entities cost more CPU than probing them
    over keep-alive (bench P1)."""
    with session_scope() as session:
        checks = {
            row.id: row
            for row in session.execute(
                select(
                    Check.id,
                    Check.url,
                    Check.method,
                    Check.timeout_s,
                    Check.expected_status,
                    Check.max_body_bytes,
                ).where(Check.id.in_({i for i, _ in slots}), Check.enabled)
            )
        }
    return [
        ProbeTarget(
            check_id=check_id,
            slot=slot,
            url=checks[check_id].url,
            method=checks[check_id].method,
            timeout_s=checks[check_id].timeout_s,
            expected_status=tuple(checks[check_id].expected_status),
            max_body_bytes=checks[check_id].max_body_bytes,
        )
        for check_id, slot in slots
        if check_id in checks
    ]
