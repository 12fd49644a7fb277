"""Security detection tasks (core/security holds the logic): the minute tick that reads new
events and runs every detector, and the daily security event analysis."""

from __future__ import annotations

from datetime import date
from typing import Any

from core.backups.tools import Conn
from core.clock import utcnow
from core.security import runner
from core.security.daily import daily_analysis, previous_local_day
from models.db import session_scope
from tasks.retry import RETRY
from workers.app import app
from workers.settings import get_config, get_settings


def _platform() -> Conn | None:
    url = get_settings().platform_database_url
    return Conn.from_url(url.get_secret_value()) if url is not None else None


@app.task(name="security.tick", soft_time_limit=240, time_limit=300, **RETRY)
def tick() -> dict[str, Any]:
    """Read new events from every source, run each detector over its new window, deliver
    ban webhooks. A duplicate tick finds the windows already judged and does nothing."""
    return runner.tick(session_scope, get_config(), _platform(), utcnow())


@app.task(name="security.run_detector", soft_time_limit=540, time_limit=600, **RETRY)
def run_detector(name: str) -> dict[str, Any]:
    """Run one detector now (manual trigger from `eventops security run`)."""
    with session_scope() as session:
        return runner.run_detector(session, get_config(), name, utcnow())


@app.task(name="security.daily_analysis", soft_time_limit=540, time_limit=600, **RETRY)
def daily(day: str | None = None) -> dict[str, Any]:
    """Summarise a local day (default: yesterday in the config's time zone)."""
    config = get_config()
    now = utcnow()
    which = date.fromisoformat(day) if day else previous_local_day(now, config.timezone)
    with session_scope() as session:
        markdown, figures = daily_analysis(session, config, which, now)
    return {
        "day": which.isoformat(),
        "findings": sum(r["findings"] for r in figures["by_detector"]),
        "bans": len(figures["bans"]),
        "chars": len(markdown),
    }
