"""The nine KPIs of the shipped config, computed on a small platform database whose answers
are known exactly, stored idempotently, and fed to the rule engine; plus the hourly counters."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.backups.tools import Conn
from core.insight.jobs import run_kpis
from core.insight.kpis import latest_kpis, period_bounds
from core.insight.summary import dashboard_summary
from core.rules import evaluate_rules
from demo import platform_db
from models.config import EventopsConfig, load_config
from models.db import session_scope
from models.insight import KpiValue
from models.tables import Incident, Metric
from tests.insight_helpers import platform_database

# 23:00 on 20 November in Auckland (NZDT): the month started 31 October 11:00 UTC.
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
MONTH_START = datetime(2026, 10, 31, 11, 0, tzinfo=UTC)
ELAPSED = (NOW - MONTH_START) / timedelta(days=30)  # 479 of 720 hours


def uid(n: int) -> str:
    return str(uuid.UUID(int=n))


def at(day: int, hour: int = 3, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, 0, tzinfo=UTC)


# Users: 8 customers and 2 vendors who signed up this month, an admin (not counted), and
# 5 older users (3 of them vendors).
USERS = (
    [(uid(n), "customer", at(5)) for n in range(1, 9)]
    + [(uid(9), "vendor", at(2)), (uid(10), "vendor", at(20, 9) + timedelta(minutes=30))]
    + [(uid(99), "admin", at(3))]
    + [(uid(n), "vendor", at(1, month=10)) for n in (101, 102, 103)]
    + [(uid(n), "customer", at(1, month=10)) for n in (104, 105)]
)
# (id, user, created, verified_at)
VENDORS = [
    (1, uid(101), at(1, month=10), at(2, month=10)),
    (2, uid(102), at(1, month=10), at(3, month=10)),
    (3, uid(103), at(1, month=10), None),
    (4, uid(9), at(2), at(4)),
    (5, uid(10), at(20, 9) + timedelta(minutes=40), None),  # too new to judge
]
BOOKINGS = [  # (id, status, created)
    (1, "confirmed", at(10)),
    (2, "confirmed", at(10)),
    (3, "confirmed", at(10)),
    (4, "completed", at(10)),
    (5, "completed", at(10)),
    (6, "pending", at(10)),
    (7, "cancelled", at(10)),
    (8, "completed", at(20, month=10)),  # last month
]
PAYMENTS = [  # (booking, cents, status, created)
    (1, 10000, "succeeded", at(10)),
    (2, 25050, "succeeded", at(10)),
    (3, 4950, "succeeded", at(10)),
    (4, 99900, "failed", at(10)),
    (7, 5000, "refunded", at(10)),
    (8, 100000, "succeeded", at(20, month=10)),
]
REVIEWS = [(1, 5, at(15)), (2, 4, at(15)), (3, 4, at(15)), (4, 3, at(15)), (8, 1, at(21, month=10))]
LOGINS = (
    # Active in the equally long stretch before the month: 101, 102, 104, 105.
    [(uid(n), at(25, month=10)) for n in (101, 102, 104, 105)]
    # Active this month: 101 and 104 again, customer 3, the admin.
    + [(uid(101), at(10)), (uid(104), at(10)), (uid(3), at(6)), (uid(99), at(6))]
)
PRODUCT_EVENTS = [(uid(105), at(12)), (uid(1), at(12)), (uid(2), at(12))]
JOBS = [at(d) for d in (3, 4, 5, 6, 7, 8, 9)] + [at(10, month=10), at(11, month=10)]

EXPECTED = {
    "userRegistration": 10.0,
    "userRetention": 0.75,  # 101, 104, 105 of 101, 102, 104, 105
    "userEngagement": 0.4,  # 6 active (101, 104, 105, 1, 2, 3) of 15 accounts
    "vendorRegistration": 2.0,
    "vendorVerification": 0.75,  # vendors 1-4 are old enough; 1, 2, 4 verified
    "vendorSatisfaction": 4.0,
    "jobPostings": 7.0,
    "successfulBookings": 5.0,
    "platformRevenue": 400.0,
}


def fill(url: str) -> None:
    with Conn.from_url(url).connect() as db:
        for n, (id_, role, created) in enumerate(USERS):
            db.execute(
                "INSERT INTO users (id, email, full_name, role, region, created_at)"
                " VALUES (%s, %s, 'Test User', %s, 'Otago', %s)",
                (id_, f"user{n}@example.test", role, created),
            )
        for id_, user, created, verified_at in VENDORS:
            db.execute(
                "INSERT INTO vendors (id, user_id, business_name, category, region, lat, lon,"
                " created_at, verified, verified_at)"
                " VALUES (%s, %s, 'Test Co', 'venue', 'Otago', -45.9, 170.5, %s, %s, %s)",
                (id_, user, created, verified_at is not None, verified_at),
            )
        db.execute(
            "INSERT INTO events (id, user_id, title, event_date, guests, region, created_at)"
            " VALUES (1, %s, 'Wedding', '2026-12-12', 80, 'Otago', %s)",
            (uid(1), at(1, month=10)),
        )
        for id_, status, created in BOOKINGS:
            db.execute(
                "INSERT INTO bookings (id, event_id, vendor_id, status, amount_cents, created_at)"
                " VALUES (%s, 1, 1, %s, 100000, %s)",
                (id_, status, created),
            )
        for n, (booking, cents, status, created) in enumerate(PAYMENTS):
            db.execute(
                "INSERT INTO payments (booking_id, stripe_payment_intent, amount_cents, status,"
                " created_at) VALUES (%s, %s, %s, %s, %s)",
                (booking, f"pi_test_{n}", cents, status, created),
            )
        for booking, rating, created in REVIEWS:
            db.execute(
                "INSERT INTO reviews (booking_id, rating, body, created_at)"
                " VALUES (%s, %s, 'ok', %s)",
                (booking, rating, created),
            )
        for user, when in LOGINS:
            db.execute(
                "INSERT INTO auth_events (user_id, email, ip, user_agent, kind, at)"
                " VALUES (%s, 'x@example.test', '192.0.2.1', 'test', 'login_success', %s)",
                (user, when),
            )
        for user, when in PRODUCT_EVENTS:
            db.execute(
                "INSERT INTO product_events (user_id, session_id, name, page, at)"
                " VALUES (%s, 's', 'search', '/search', %s)",
                (user, when),
            )
        for when in JOBS:
            db.execute(
                "INSERT INTO job_postings (user_id, title, category, region, status, created_at)"
                " VALUES (%s, 'DJ wanted', 'music', 'Otago', 'open', %s)",
                (uid(1), when),
            )


@pytest.fixture(scope="module")
def platform_url(postgres_server_url: str) -> Iterator[str]:
    with platform_database(postgres_server_url) as url:
        platform_db.apply_schema(Conn.from_url(url))
        fill(url)
        yield url


@pytest.fixture(scope="module")
def config(repo_root_module: Path) -> EventopsConfig:
    return load_config(repo_root_module / "config" / "eventops.yaml")


@pytest.fixture(scope="module")
def repo_root_module() -> Path:
    return Path(__file__).resolve().parents[2]


def test_the_month_is_counted_in_the_config_time_zone() -> None:
    assert period_bounds("month", NOW, "Pacific/Auckland") == (
        MONTH_START,
        datetime(2026, 11, 30, 11, 0, tzinfo=UTC),
    )
    # ISO weeks start on Monday: Monday 16 November 00:00 NZDT.
    assert period_bounds("week", NOW, "Pacific/Auckland")[0] == datetime(
        2026, 11, 15, 11, 0, tzinfo=UTC
    )


def test_the_nine_seed_kpis_have_the_seed_targets(config: EventopsConfig) -> None:
    assert {k.name: k.target for k in config.insight.kpis} == {
        "userRegistration": 50,
        "userRetention": 0.8,
        "userEngagement": 0.6,
        "vendorRegistration": 100,
        "vendorVerification": 0.9,
        "vendorSatisfaction": 4.5,
        "jobPostings": 200,
        "successfulBookings": 50,
        "platformRevenue": 5000,
    }
    assert {k.period for k in config.insight.kpis} == {"month"}


def test_every_kpi_is_computed_from_the_platform_database_exactly(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    summary = run_kpis(config, platform_url, NOW)

    assert summary["failed"] == {}
    with session_scope() as session:
        readings = {r.name: r for r in latest_kpis(session)}
    assert {name: r.value for name, r in readings.items()} == pytest.approx(EXPECTED)
    registration = readings["userRegistration"]
    # Prorated: 479 of the month's 720 hours have passed, so the pace is 50 * 479 / 720.
    assert registration.expected == pytest.approx(50 * ELAPSED)
    assert registration.ok is False
    assert (registration.period_start, registration.bucket) == (MONTH_START, NOW)
    # Ratios and averages are judged against the whole target.
    assert readings["vendorSatisfaction"].expected == 4.5


def test_a_rerun_in_the_same_hour_replaces_and_the_next_hour_adds_history(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    run_kpis(config, platform_url, NOW)
    run_kpis(config, platform_url, NOW + timedelta(minutes=20))
    run_kpis(config, platform_url, NOW + timedelta(hours=1))

    with session_scope() as session:
        per_kpi = dict(
            session.execute(select(KpiValue.kpi, func.count()).group_by(KpiValue.kpi)).all()
        )
        samples = session.scalar(select(func.count()).where(Metric.name == "kpi.platformRevenue"))
        latest = latest_kpis(session, ["userRegistration"])
    assert set(per_kpi.values()) == {2}
    assert samples == 2
    assert latest[0].bucket == NOW + timedelta(hours=1)


def test_kpi_values_feed_the_rule_engine(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    run_kpis(config, platform_url, NOW)

    with session_scope() as session:
        evaluate_rules(session, config, now=NOW + timedelta(minutes=1))
        opened = {
            i.rule: i.title
            for i in session.scalars(select(Incident).where(Incident.rule.is_not(None)))
        }
    assert opened["vendor-satisfaction-below-target"] == (
        "platform: kpi.vendorSatisfaction last 4 < 4.5"
    )
    assert opened["vendor-verification-below-target"] == (
        "platform: kpi.vendorVerification last 0.75 < 0.9"
    )


def test_hourly_counters_fill_the_last_day_and_the_daily_registration_rule_fires(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    first = run_kpis(config, platform_url, NOW)
    again = run_kpis(config, platform_url, NOW + timedelta(minutes=5))

    assert first["counter_samples"] == 3 * 24
    assert again["counter_samples"] == 0  # every hour is there already
    with session_scope() as session:
        registrations = dict(
            session.execute(
                select(Metric.at, Metric.value).where(Metric.name == "user_registrations")
            ).all()
        )
        evaluate_rules(session, config, now=NOW + timedelta(minutes=1))
        low = session.scalar(select(Incident).where(Incident.rule == "user-registrations-low"))
    # Vendor 10 signed up at 09:30: the hour ending 10:00 has one, the other 23 hours none.
    assert registrations[NOW] == 1
    assert sum(registrations.values()) == 1 and len(registrations) == 24
    assert low is not None and low.title == "platform: user_registrations sum 1 < 10"


def test_the_dashboard_summary_shows_kpis_in_config_order_and_live_activity(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    run_kpis(config, platform_url, NOW)

    with session_scope() as session:
        summary = dashboard_summary(session, config, NOW, platform_url=platform_url)
        without_platform = dashboard_summary(session, config, NOW, platform_url=None)

    assert [k["name"] for k in summary["kpis"]] == list(EXPECTED)
    assert summary["kpis"][0] == {
        "name": "userRegistration",
        "value": 10.0,
        "target": 50.0,
        "expected": pytest.approx(50 * ELAPSED),
        "period": "month",
        "ok": False,
    }
    assert summary["vitals"] == []
    # No logins in the last hour; none today (NZ day started 11:00 UTC yesterday); no bookings.
    assert summary["activity"] == {
        "logins_last_hour": 0,
        "active_users_today": 0,
        "bookings_today": 0,
    }
    assert without_platform["activity"] == {}


def test_a_failing_kpi_query_is_reported_and_the_others_still_computed(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    broken = config.model_copy(
        update={
            "insight": config.insight.model_copy(
                update={
                    "kpis": [
                        config.insight.kpis[0].model_copy(
                            update={"sql": "SELECT count(*) FROM no_such_table"}
                        ),
                        *config.insight.kpis[1:],
                    ]
                }
            )
        }
    )

    summary = run_kpis(broken, platform_url, NOW)

    assert list(summary["failed"]) == ["userRegistration"]
    assert "no_such_table" in summary["failed"]["userRegistration"]
    assert len(summary["kpis"]) == 8
