"""The performance review from the rollups, and the three `maintenance.*` tasks run through
Celery's task objects against real Postgres."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from core.performance_review import last_complete_period, performance_review
from core.rollups import run_rollup
from core.schedule import sync_checks
from models.config_retention import OutcomeRetentionConfig
from models.db import session_scope
from models.rollups import PerformanceReview
from models.tables import Check, Metric, Outcome
from tests.conftest import make_config

DAY = datetime(2026, 9, 14, tzinfo=UTC)  # a Monday


def seed_two_days() -> None:
    """stripe: fine on day one, 2% down and three times slower on day two; mapbox: fine."""
    checks = [
        {"name": name, "url": "http://127.0.0.1:9/", "interval": "1m", "timeout": "5s"}
        for name in ("stripe", "mapbox")
    ]
    with session_scope() as session:
        sync_checks(session, make_config(checks=checks), now=DAY)
        ids = dict(session.execute(select(Check.name, Check.id)).all())
    rows: list[dict[str, Any]] = []
    for minute in range(2 * 24 * 60):
        slot = DAY + timedelta(minutes=minute)
        second_day = minute >= 24 * 60
        for name, check_id in ids.items():
            slow = name == "stripe" and second_day
            down = slow and minute % 50 == 0
            rows.append(
                {
                    "check_id": check_id,
                    "slot": slot,
                    "observed_at": slot,
                    "status": "down" if down else "up",
                    "latency_ms": (300.0 if slow else 100.0) + minute % 7,
                }
            )
    with session_scope() as session:
        for i in range(0, len(rows), 5000):
            session.execute(insert(Outcome).values(rows[i : i + 5000]))
    for _ in range(6):
        with session_scope() as session:
            run_rollup(session, OutcomeRetentionConfig(), now=DAY + timedelta(days=2, minutes=5))


def test_the_daily_review_reports_uptime_and_response_times_against_the_day_before(
    clean_db: str,
) -> None:
    seed_two_days()
    now = DAY + timedelta(days=2, minutes=20)
    assert last_complete_period("daily", now) == DAY + timedelta(days=1)
    with session_scope() as session:
        result = performance_review(session, "daily", now=now)
    report = result["report"]
    assert result["checks"] == 2
    assert report.startswith("# Daily performance review: 2026-09-15 to 2026-09-15 (UTC)")
    assert "- `stripe`: uptime 97.99% below 99.90%" in report  # 29 of 1440 down
    assert re.search(r"- `stripe`: p95 30\d ms up \d{3}% from 10\d ms", report)
    assert "`mapbox`" not in report.split("## Per check")[0]
    mapbox_row = next(line for line in report.splitlines() if line.startswith("| `mapbox`"))
    assert mapbox_row.startswith("| `mapbox` | 1440 | 0 | 100.00% | +0.00 pp |")

    # Run again (a redelivered task): the same row, rewritten.
    with session_scope() as session:
        again = performance_review(session, "daily", now=now + timedelta(minutes=5))
        stored = session.scalars(select(PerformanceReview)).all()
    assert again["id"] == result["id"] and len(stored) == 1
    assert stored[0].report == again["report"]
    assert stored[0].figures["stripe"]["down"] == 29


def test_the_weekly_review_covers_the_last_whole_iso_week(clean_db: str) -> None:
    seed_two_days()
    now = DAY + timedelta(days=8, hours=1)  # the Tuesday after
    assert last_complete_period("weekly", now) == DAY
    with session_scope() as session:
        result = performance_review(session, "weekly", now=now)
    assert result["report"].startswith(
        "# Weekly performance review: 2026-09-14 to 2026-09-20 (UTC)"
    )
    assert "| `mapbox` | 2880 | 0 | 100.00% | - |" in result["report"]
    with pytest.raises(ValueError, match="period"):
        last_complete_period("monthly", now)  # type: ignore[arg-type]


def test_the_maintenance_tasks_run_and_report_small_summaries(clean_db: str) -> None:
    from tasks.retention import partitions, review, rollup

    maintained = partitions.run()
    assert maintained["waiting_for_rollup"] == []
    assert maintained["health"]["outcome_partitions_ahead_days"] >= 7
    rolled = rollup.run()
    assert set(rolled) >= {"minutes", "hours", "rerolled", "minute_watermark", "lag_s"}
    reviewed = review.run("weekly")
    assert reviewed["period"] == "weekly" and reviewed["checks"] == 0
    assert "No outcomes in this period." in reviewed["report"]
    with session_scope() as session:
        names = set(session.scalars(select(Metric.name).where(Metric.subject == "outcomes")).all())
        assert session.scalar(select(func.count()).select_from(PerformanceReview)) == 1
    assert names == {
        "outcome_partitions_ahead_days",
        "outcome_default_partition_rows",
        "outcome_rollup_lag_s",
    }
