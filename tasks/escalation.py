"""Escalation tasks: the sweeper that fires due steps and delivers the outbox."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from core.clock import utcnow
from core.escalation import sweep as sweep_once
from core.maintenance.selfmon import SWEEPER, stamp
from models.db import session_scope
from workers.app import app
from workers.settings import get_config


@app.task(
    name="escalations.sweep",
    soft_time_limit=90,
    time_limit=120,
    autoretry_for=(DBAPIError, ConnectionError),
    retry_backoff=True,
    max_retries=3,
)
def sweep() -> dict[str, int]:
    """Fire due escalation steps and send due notifications; safe to run twice at once."""
    summary = sweep_once(session_scope, get_config())
    # The self-monitoring check reads this mark: a sweeper that stops running pages too.
    with session_scope() as session:
        stamp(session, SWEEPER, utcnow(), summary)
    return summary
