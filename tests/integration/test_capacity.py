"""Capacity planning: forecasts on series whose answer is known, snapshots of the demo
platform database, limit warnings through the incident lifecycle, scaling thresholds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.backups.tools import Conn
from core.capacity import (
    GB,
    check_limits,
    fit_holt,
    fit_line,
    forecast_series,
    forecasts,
    record_samples,
    scaling_advice,
    take_snapshot,
)
from core.metrics import record_metric
from demo.platform_db import generate
from models.config_reports import CapacityConfig
from models.db import session_scope
from models.logs import CapacitySample
from models.tables import Incident
from tests.conftest import make_config

D0 = date(2026, 10, 1)


def line_series(days: int, start: float, per_day: float) -> list[tuple[date, float]]:
    return [(D0 + timedelta(days=n), start + per_day * n) for n in range(days)]


def test_a_perfect_line_reaches_its_limit_on_the_known_day() -> None:
    # 100 + 10/day for 30 days (day 29: 390); 500 is reached on day 40, 11 days on.
    forecast = forecast_series(line_series(30, 100, 10), 0.25, limit=500, metric="users")
    assert forecast.model == "linear"
    assert forecast.slope_per_day == pytest.approx(10)
    assert forecast.days_to_limit == pytest.approx(11)
    assert forecast.reaches_on == (D0 + timedelta(days=40)).isoformat()
    assert forecast.in_30_days == pytest.approx(690)
    assert "linear chosen as the simpler" in forecast.why


def test_a_series_whose_slope_changes_is_fit_better_by_holt() -> None:
    # 5/day for 18 days, then 45/day: the line averages the two slopes, Holt follows the new one.
    series = [
        (D0 + timedelta(days=n), 1000 + 5 * n + (40 * (n - 18) if n > 18 else 0)) for n in range(36)
    ]
    forecast = forecast_series(series, 0.25, limit=5000, metric="users")
    assert forecast.model == "holt"
    assert forecast.holt_rmse is not None and forecast.linear_rmse is not None
    assert forecast.holt_rmse < forecast.linear_rmse / 10
    assert forecast.slope_per_day == pytest.approx(45, rel=0.01)
    # 1855 on day 35, 45/day: 5000 is 69.9 days away.
    assert forecast.days_to_limit == pytest.approx((5000 - 1855) / 45, rel=0.01)
    assert forecast.why.startswith("Holt fits better")


def test_least_squares_and_holt_recover_known_parameters() -> None:
    line = fit_line([0, 1, 2, 3], [3, 5, 7, 9])
    assert (line.slope, line.intercept) == pytest.approx((2, 3))
    holt = fit_holt([10, 12, 14, 16, 18])
    assert holt.ahead(1) == pytest.approx(20)


def test_a_flat_or_falling_series_never_reaches_its_limit_and_one_point_is_too_few() -> None:
    assert forecast_series(line_series(20, 500, -3), 0.25, limit=1000).days_to_limit is None
    single = forecast_series(line_series(1, 5, 0), 0.25, limit=10)
    assert (single.model, single.days_to_limit) == (None, None)
    assert "forecasts need 2" in single.why
    # Already over the limit: zero days.
    assert forecast_series(line_series(10, 2000, 1), 0.25, limit=1000).days_to_limit == 0


@pytest.fixture(scope="module")
def platform(postgres_server_url: str) -> Iterator[tuple[Conn, dict[str, int]]]:
    server = Conn.from_url(postgres_server_url)
    name = f"eventops_capacity_{uuid.uuid4().hex[:8]}"
    with server.connect() as db:
        db.execute(f'CREATE DATABASE "{name}"')
    conn = server.with_db(name)
    try:
        yield conn, generate(conn, scale=0.05, seed=3, days=10, now=datetime.now(UTC))
    finally:
        with server.connect() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_snapshot_of_the_demo_platform_measures_every_figure_and_its_cost(
    clean_db: str, platform: tuple[Conn, dict[str, int]], tmp_path: Path
) -> None:
    conn, counts = platform
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "photo.jpg").write_bytes(b"x" * 250_000)
    (tmp_path / "notes.txt").write_bytes(b"y" * 50_000)
    config = CapacityConfig.model_validate(
        {
            "workers": 3,
            "costs": {
                "database_per_gb_month": 2.0,
                "storage_per_gb_month": 1.0,
                "per_million_requests": 5.0,
                "per_worker_month": 20.0,
                "base_month": 10.0,
            },
        }
    )
    with conn.connect() as db:
        day_requests = db.execute(
            "SELECT count(*) FROM api_requests WHERE at >= now() - interval '1 day'"
        ).fetchone()
        size = db.execute("SELECT pg_database_size(current_database())").fetchone()
    assert day_requests is not None and size is not None
    at = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    with session_scope() as session:
        summary = take_snapshot(session, conn, config, [tmp_path], at)
    assert "errors" not in summary
    with session_scope() as session:
        samples = {
            (s.metric, s.subject): s.value
            for s in session.scalars(select(CapacitySample).where(CapacitySample.at == at))
        }
    assert samples[("users", "platform")] == counts["users"]
    assert samples[("requests_per_day", "platform")] == day_requests[0]
    assert samples[("storage_bytes", "platform")] == 300_000
    # generate() analyses its tables, so the row estimates are the generated counts.
    assert samples[("table_rows", "bookings")] == counts["bookings"]
    assert samples[("table_bytes", "users")] > 0
    database_bytes = samples[("database_bytes", "platform")]
    assert database_bytes == pytest.approx(size[0], rel=0.05)
    expected = {
        "database": database_bytes / GB * 2.0,
        "storage": 300_000 / GB * 1.0,
        "requests": day_requests[0] * 30 / 1e6 * 5.0,
        "workers": 60.0,
        "base": 10.0,
    }
    for part, cost in expected.items():
        assert samples[("monthly_cost", part)] == pytest.approx(cost, abs=1e-4)
    assert samples[("monthly_cost", "platform")] == pytest.approx(sum(expected.values()), abs=1e-3)
    # Taking the same snapshot again (a redelivered task) stores nothing twice.
    with session_scope() as session:
        take_snapshot(session, conn, config, [tmp_path], at)
        assert len(session.scalars(select(CapacitySample)).all()) == len(samples)


def test_a_broken_capacity_query_is_reported_and_the_rest_still_measured(
    clean_db: str, platform: tuple[Conn, dict[str, int]]
) -> None:
    conn, counts = platform
    config = CapacityConfig.model_validate(
        {"queries": {"users": "SELECT count(*) FROM users", "jobs": "SELECT count(*) FROM jobs"}}
    )
    with session_scope() as session:
        summary = take_snapshot(session, conn, config, [])
    assert summary["figures"]["users"] == counts["users"]
    assert summary["errors"][0].startswith('capacity.queries.jobs: relation "jobs"')


def test_a_capacity_query_cannot_change_the_platform(
    clean_db: str, platform: tuple[Conn, dict[str, int]]
) -> None:
    conn, _ = platform
    writes = "WITH gone AS (DELETE FROM reviews WHERE false RETURNING 1) SELECT count(*) FROM gone"
    config = CapacityConfig.model_validate({"queries": {"writes": writes}})
    with session_scope() as session:
        summary = take_snapshot(session, conn, config, [])
    assert "writes" not in summary["figures"]
    assert "read-only transaction" in summary["errors"][0]


def _store_line(days: int, start: float, per_day: float, metric: str, end: datetime) -> None:
    with session_scope() as session:
        for n in range(days):
            at = end - timedelta(days=days - 1 - n)
            record_samples(session, [(metric, "platform", start + per_day * n)], at)


def test_a_limit_less_than_30_days_away_is_a_warning_that_clears_when_it_moves_out(
    clean_db: str,
) -> None:
    now = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    # 60 days of 4 GB + 50 MB/day: day 59 at 6.95 GB, the 8 GB plan is 21 days away.
    _store_line(60, 4e9, 50e6, "database_bytes", now)
    # Users: 10,000 + 20/day, limit 100,000: years away, no warning.
    _store_line(60, 10_000, 20, "users", now)
    config = make_config(
        capacity={
            "limits": [
                {"metric": "database_bytes", "limit": 8e9, "description": "Writes stop."},
                {"metric": "users", "limit": 100_000},
            ]
        }
    )
    with session_scope() as session:
        result = check_limits(session, config, now)
    assert result["warnings"] == ["capacity:database_bytes:platform"]
    with session_scope() as session:
        incident = session.scalars(select(Incident)).one()
        assert (incident.severity, incident.category, incident.status) == (
            "warning",
            "capacity",
            "open",
        )
        assert incident.title == "database_bytes reaches its limit 8,000,000,000 in 21 days"
        assert incident.impact == "Writes stop."
        by_metric = {f.metric: f for f in forecasts(session, config.capacity, now)}
    assert by_metric["users"].days_to_limit == pytest.approx((100_000 - 11_180) / 20)
    # The plan grows to 16 GB: the forecast moves out and the warning resolves.
    bigger = make_config(capacity={"limits": [{"metric": "database_bytes", "limit": 16e9}]})
    with session_scope() as session:
        assert check_limits(session, bigger, now)["cleared"] == ["capacity:database_bytes:platform"]


def test_scaling_advice_shows_each_threshold_with_the_current_figure(clean_db: str) -> None:
    now = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    config = CapacityConfig.model_validate(
        {"scaling": {"add_worker_queue_lag_s": 30, "database_plan_bytes": "8GB"}}
    )
    with session_scope() as session:
        # The worst queue's average over the last hour counts: slow averages 95 s.
        record_metric(session, "queue_oldest_age_s", 90.0, "slow", now - timedelta(minutes=20))
        record_metric(session, "queue_oldest_age_s", 100.0, "slow", now - timedelta(minutes=2))
        record_metric(session, "queue_oldest_age_s", 1.0, "probes", now - timedelta(minutes=2))
        record_metric(session, "queue_oldest_age_s", 999.0, "slow", now - timedelta(hours=2))
        record_samples(session, [("database_bytes", "platform", 7e9)], now)
    with session_scope() as session:
        lag, cpu, database = scaling_advice(session, config, now)
    assert (lag.action, lag.threshold, lag.current, lag.due) == (
        "add a worker",
        "queue lag > 30 s",
        "95.0 s",
        True,
    )
    assert (cpu.current, cpu.due) == ("no data", None)
    assert database.threshold == "database > 80% of 8 GB"
    assert (database.current, database.due) == ("7.00 GB (88%)", True)
