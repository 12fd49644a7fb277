"""eventops' own data: outcome partitions and retention, rollups, and the performance review.

Names are `maintenance.*` (routed to the slow queue); beat sends the minute rollup to the
pipeline queue so a long backup on the slow queue never holds it up.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError

from core.clock import utcnow
from core.metrics import record_metric
from core.partitions import METRIC_SUBJECT, maintain
from core.performance_review import Period, performance_review
from core.rollups import run_rollup, watermarks
from models.db import session_scope
from workers.app import app
from workers.settings import get_config

RETRY = {"autoretry_for": (DBAPIError,), "retry_backoff": True, "max_retries": 3}


@app.task(name="maintenance.partitions", soft_time_limit=600, time_limit=660, **RETRY)
def partitions() -> dict[str, Any]:
    """Create outcome partitions ahead, drop those past retention once rolled up, trim the
    rollups, and record the partition and rollup health figures."""
    with session_scope() as session:
        return maintain(session, get_config().retention)


@app.task(name="maintenance.rollup", soft_time_limit=50, time_limit=60, **RETRY)
def rollup() -> dict[str, Any]:
    """Roll outcomes up per minute and per hour to now minus the settle delay; re-roll the
    minutes late outcomes landed in. Records `outcome_rollup_lag_s`."""
    now = utcnow()
    try:
        with session_scope() as session:
            summary = run_rollup(session, get_config().retention, now=now)
            if "lag_s" in summary:
                record_metric(
                    session, "outcome_rollup_lag_s", summary["lag_s"], METRIC_SUBJECT, now
                )
            return summary
    except Exception:
        # The rollup failed: still record how far behind it is, so the lag rule sees it.
        with session_scope() as session:
            mark = watermarks(session).get("minute")
            if mark is not None:
                lag = (now - mark).total_seconds()
                record_metric(session, "outcome_rollup_lag_s", lag, METRIC_SUBJECT, now)
        raise


@app.task(name="maintenance.performance_review", soft_time_limit=300, time_limit=360, **RETRY)
def review(period: Period = "daily") -> dict[str, Any]:
    """The last complete day's or week's performance review, stored; returns it (Markdown in
    `report`) with a short summary."""
    with session_scope() as session:
        return performance_review(session, period)
