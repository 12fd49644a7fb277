"""The rule engine's baseline comparison: "bookings down 20% against the 7-day baseline"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from core.metrics import record_metrics
from core.rules import evaluate_rules
from models.config import ConfigError
from models.db import session_scope
from models.tables import Incident
from tests.conftest import make_config

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

BOOKINGS_DOWN = {
    "name": "bookings-down",
    "metric": "bookings",
    "aggregate": "sum",
    "window": "1d",
    "baseline": "7d",
    "op": "<",
    "threshold": 0.8,
    "severity": "warning",
    "category": "business",
}


def hourly_bookings(per_hour_last_day: float, per_hour_before: float) -> None:
    """Hourly samples: the last 24 hours at one rate, the 7 days before at another."""
    samples = []
    for h in range(24 * 8):
        at = T0 - h * HOUR
        rate = per_hour_last_day if h < 24 else per_hour_before
        samples.append(("bookings", "platform", rate, at))
    with session_scope() as session:
        record_metrics(session, samples)


def evaluate(rule: dict[str, Any]) -> dict[str, Any]:
    config = make_config(rules=[rule])
    with session_scope() as session:
        return evaluate_rules(session, config, now=T0)


def open_incidents() -> list[Incident]:
    with session_scope() as session:
        return list(session.scalars(select(Incident).where(Incident.status != "resolved")))


def test_bookings_down_25_percent_on_the_7_day_baseline_opens_an_incident(clean_db: str) -> None:
    hourly_bookings(per_hour_last_day=3, per_hour_before=4)  # 72 a day against 96

    assert evaluate(BOOKINGS_DOWN)["breaching"] == 1

    [incident] = open_incidents()
    assert incident.title == "platform: bookings sum 75% of its 7d baseline < 80%"
    assert incident.fingerprint == "rule:bookings-down:platform"


def test_bookings_down_only_10_percent_stays_quiet(clean_db: str) -> None:
    hourly_bookings(per_hour_last_day=3.6, per_hour_before=4)  # 90%

    summary = evaluate(BOOKINGS_DOWN)

    assert (summary["subjects"], summary["breaching"]) == (1, 0)
    assert open_incidents() == []


def test_an_average_is_compared_with_the_baseline_average_not_scaled(clean_db: str) -> None:
    hourly_bookings(per_hour_last_day=3, per_hour_before=4)

    summary = evaluate(BOOKINGS_DOWN | {"aggregate": "avg", "threshold": 0.7})

    assert summary["breaching"] == 0  # 3 / 4 = 0.75, not below 0.7


def test_no_baseline_history_means_no_verdict(clean_db: str) -> None:
    with session_scope() as session:
        record_metrics(session, [("bookings", "platform", 0.0, T0 - h * HOUR) for h in range(24)])

    summary = evaluate(BOOKINGS_DOWN)

    assert (summary["subjects"], summary["breaching"]) == (1, 0)
    assert open_incidents() == []


def test_a_baseline_on_an_outcome_metric_is_refused_with_its_field() -> None:
    with pytest.raises(ConfigError) as error:
        make_config(rules=[BOOKINGS_DOWN | {"metric": "uptime"}])
    assert "rules[0].baseline: applies to metrics-table metrics" in str(error.value)
