"""Platform insight tasks: KPIs, Web Vitals, funnels, feedback, experiments.

Thin: each reads the config and settings, runs one job of core.insight.jobs and returns a
small summary. Every job's rows have natural keys (the hour, the 5-minute slot, the period
end), so a duplicate tick or a redelivery replaces rather than duplicates.
"""

from __future__ import annotations

from typing import Any

from core.clock import utcnow
from core.insight import jobs
from tasks.retry import RETRY
from workers.app import app
from workers.settings import get_config, get_settings


def _platform_url() -> str | None:
    url = get_settings().platform_database_url
    return url.get_secret_value() if url is not None else None


_NO_PLATFORM = {"skipped": "EVENTOPS_PLATFORM_DATABASE_URL is not set"}


@app.task(name="insight.kpis", soft_time_limit=540, time_limit=600, **RETRY)
def kpis() -> dict[str, Any]:
    """Every KPI for its current period, and the hourly counters still missing."""
    if (url := _platform_url()) is None:
        return _NO_PLATFORM
    return jobs.run_kpis(get_config(), url, utcnow())


@app.task(name="insight.vitals", soft_time_limit=240, time_limit=280, **RETRY)
def vitals() -> dict[str, Any]:
    """p75 per page, device and metric over the rolling window, recorded for the rules."""
    return jobs.run_vitals(get_config(), utcnow())


@app.task(name="insight.analytics", soft_time_limit=1700, time_limit=1800, **RETRY)
def analytics() -> dict[str, Any]:
    """Funnels, feature adoption and feedback over their lookbacks."""
    if (url := _platform_url()) is None:
        return _NO_PLATFORM
    return jobs.run_analytics(get_config(), url, utcnow())


@app.task(name="insight.experiments", soft_time_limit=540, time_limit=600, **RETRY)
def experiments() -> dict[str, Any]:
    """A/B test figures; a sample ratio mismatch opens a warning incident."""
    if (url := _platform_url()) is None:
        return _NO_PLATFORM
    return jobs.run_experiments(get_config(), url, utcnow())


@app.task(name="insight.prune", soft_time_limit=540, time_limit=600, **RETRY)
def prune() -> dict[str, int]:
    """Beacons past retention and hourly KPI rows of long-closed periods."""
    return jobs.prune(get_config(), utcnow())
