"""The security tasks as a worker runs them: beat entries, the tick on the demo platform's
traffic through the shipped config, the daily analysis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from celery.schedules import crontab
from sqlalchemy import select

from beat_schedule import BEAT_SCHEDULE
from core.backups.tools import Conn
from demo import platform_db
from models.db import session_scope
from models.security import SecurityDailyReport, SecurityEvent
from tests.insight_helpers import platform_database
from workers.app import app
from workers.settings import get_config, get_settings

ENTRIES = {"security-tick": "security.tick", "security-daily-analysis": "security.daily_analysis"}


def test_every_security_duty_has_a_beat_entry_with_a_registered_task() -> None:
    import tasks.security  # noqa: F401  (registers the tasks)

    for entry, task in ENTRIES.items():
        scheduled = BEAT_SCHEDULE[entry]
        assert scheduled["task"] == task
        assert task in app.tasks
        assert scheduled["options"]["queue"] == "slow"
        schedule = scheduled["schedule"]
        period = 86400.0 if isinstance(schedule, crontab) else float(schedule)
        # A tick that waited longer than its period is stale: the next one does its work.
        assert 0 < scheduled["options"]["expires"] < period


@pytest.fixture
def demo_settings(
    postgres_server_url: str, clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    with platform_database(postgres_server_url) as url:
        platform_db.generate(Conn.from_url(url), scale=0.05, seed=7, days=3, now=datetime.now(UTC))
        monkeypatch.setenv("EVENTOPS_DATABASE_URL", clean_db)
        monkeypatch.setenv("EVENTOPS_PLATFORM_DATABASE_URL", url)
        monkeypatch.delenv("EVENTOPS_CONFIG_FILE", raising=False)
        get_settings.cache_clear()
        get_config.cache_clear()
        yield
    get_settings.cache_clear()
    get_config.cache_clear()


def test_the_tick_reads_the_demo_platform_and_a_duplicate_tick_adds_nothing(
    demo_settings: None,
) -> None:
    from tasks import security

    first = security.tick.apply().get()
    assert first["sources"]["auth"]["stored"] > 0
    assert first["sources"]["api"]["stored"] > 0
    assert first["sources"]["access"]["stored"] > 0
    for name in ("failed_logins", "api_abuse", "data_access", "signatures"):
        assert "until" in first[name], first[name]
    second = security.tick.apply().get()
    assert {s["stored"] for s in second["sources"].values()} == {0}
    with session_scope() as session:
        assert session.scalar(select(SecurityEvent.id).limit(1)) is not None
    daily = security.daily.apply(kwargs={"day": "2026-11-26"}).get()
    assert daily["day"] == "2026-11-26"
    with session_scope() as session:
        assert session.get(SecurityDailyReport, datetime(2026, 11, 26).date()) is not None
