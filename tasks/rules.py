"""Rule tasks: the tick that evaluates every alert rule against its window."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import DBAPIError

from core.rules import evaluate_rules
from models.db import session_scope
from workers.app import app
from workers.settings import get_config


@app.task(
    name="rules.evaluate",
    soft_time_limit=50,
    time_limit=60,
    autoretry_for=(DBAPIError,),
    retry_backoff=True,
    max_retries=3,
)
def evaluate() -> dict[str, Any]:
    """Evaluate every rule once; open and resolve their incidents."""
    config = get_config()
    with session_scope() as session:
        summary = evaluate_rules(session, config)
    if summary["urgent"]:
        # A critical rule opened: page now rather than at the sweeper's next tick.
        from tasks.escalation import sweep

        sweep.delay()
    return summary
