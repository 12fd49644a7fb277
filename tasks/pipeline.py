"""Pipeline tasks: write outcomes that could not be written when they were probed."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from core.pipeline import record_outcomes
from core.probing import ProbeResult
from models.db import session_scope
from workers.app import app
from workers.settings import get_config


@app.task(
    name="pipeline.record_outcomes",
    soft_time_limit=60,
    time_limit=90,
    autoretry_for=(DBAPIError, ConnectionError, OSError),
    retry_backoff=2,
    retry_backoff_max=60,
    # Retried until Postgres is back: dropping outcomes is not an option.
    max_retries=None,
)
def record_outcomes_later(outcomes: list[dict]) -> dict:
    results = [ProbeResult.from_json(o) for o in outcomes]
    with session_scope() as session:
        summary = record_outcomes(session, results, get_config())
    if summary.urgent:
        from tasks.escalation import sweep

        sweep.delay()
    return summary.to_json()
