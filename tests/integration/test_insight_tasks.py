"""The insight tasks as beat sends them: registered, routed, expiring before their next run, and
working end to end on the demo platform database and real Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from celery.schedules import crontab
from sqlalchemy import func, select

from beat_schedule import BEAT_SCHEDULE
from core.backups.tools import Conn
from demo import platform_db
from models.db import session_scope
from models.insight import ExperimentResult, FeedbackSummary, FunnelStep, KpiValue
from models.tables import Metric
from tests.insight_helpers import platform_database
from workers.app import app
from workers.settings import get_config, get_settings

INSIGHT_ENTRIES = {
    "insight-kpis": "insight.kpis",
    "insight-vitals": "insight.vitals",
    "insight-analytics": "insight.analytics",
    "insight-experiments": "insight.experiments",
    "insight-prune": "insight.prune",
}


def _period_s(schedule: object) -> float:
    if isinstance(schedule, int | float):
        return float(schedule)
    assert isinstance(schedule, crontab)
    return 3600.0 if schedule.hour == set(range(24)) else 86400.0


def test_every_insight_duty_has_a_beat_entry_with_a_registered_task() -> None:
    import tasks.insight  # noqa: F401  (registers the tasks)

    for entry, task in INSIGHT_ENTRIES.items():
        scheduled = BEAT_SCHEDULE[entry]
        assert scheduled["task"] == task
        assert task in app.tasks
        options = scheduled["options"]
        assert options["queue"] in ("slow", "pipeline")
        # A tick that waited longer than its period is stale: the next one does its work.
        assert 0 < options["expires"] < _period_s(scheduled["schedule"])


@pytest.fixture(scope="module")
def demo_platform(postgres_server_url: str) -> Iterator[str]:
    with platform_database(postgres_server_url) as url:
        platform_db.generate(Conn.from_url(url), scale=0.1, seed=7, days=30, now=datetime.now(UTC))
        yield url


@pytest.fixture
def settings_for(
    demo_platform: str, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.setenv("EVENTOPS_DATABASE_URL", clean_db)
    monkeypatch.setenv("EVENTOPS_PLATFORM_DATABASE_URL", demo_platform)
    monkeypatch.delenv("EVENTOPS_CONFIG_FILE", raising=False)
    get_settings.cache_clear()
    get_config.cache_clear()
    yield
    get_settings.cache_clear()
    get_config.cache_clear()


def test_the_tasks_compute_every_figure_from_the_demo_platform(settings_for: None) -> None:
    from tasks import insight

    kpis = insight.kpis.apply().get()
    analytics = insight.analytics.apply().get()
    experiments = insight.experiments.apply().get()
    vitals = insight.vitals.apply().get()
    pruned = insight.prune.apply().get()

    assert kpis["failed"] == {}
    # The demo data makes every KPI non-trivial: a value, and not zero.
    assert len(kpis["kpis"]) == 9
    assert all(k["value"] for k in kpis["kpis"].values()), kpis["kpis"]
    assert kpis["counter_samples"] == 3 * 24
    funnel = analytics["funnels"]["booking"]
    assert funnel[0] > funnel[-1] > 0 and funnel == sorted(funnel, reverse=True)
    assert 0 < analytics["adoption"]["map"] < 1
    assert analytics["nps"] is not None
    assert set(experiments) == {"checkout-button", "search-ranking"}
    assert vitals["series"] == 0  # no beacons yet
    assert pruned == {"web_vitals": 0, "kpi_values": 0}
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(KpiValue)) == 9
        assert session.scalar(select(func.count()).select_from(FunnelStep)) == 5 + 2
        assert session.scalar(select(func.count()).select_from(FeedbackSummary)) == 1
        assert session.scalar(select(func.count()).select_from(ExperimentResult)) == 4
        kpi_metrics = session.scalar(select(func.count()).where(Metric.name.like("kpi.%")))
    assert kpi_metrics == 9


def test_without_a_platform_database_the_tasks_say_so_and_do_nothing(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks import insight

    monkeypatch.setenv("EVENTOPS_DATABASE_URL", clean_db)
    monkeypatch.delenv("EVENTOPS_PLATFORM_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        for task in (insight.kpis, insight.analytics, insight.experiments):
            assert task.apply().get() == {"skipped": "EVENTOPS_PLATFORM_DATABASE_URL is not set"}
    finally:
        get_settings.cache_clear()
