"""Funnels, feature adoption, feedback and A/B tests on a platform database whose answers are
known: 7 users start the booking funnel, 5 reach step 2, 2 finish; 3 of 10 active users use
the map; NPS 20; a 560/440 split configured as 50/50 is a sample ratio mismatch."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from core.backups.tools import Conn
from core.insight.funnels import latest_funnel
from core.insight.jobs import run_analytics, run_experiments
from demo import platform_db
from models.config import EventopsConfig
from models.db import session_scope
from models.insight import ExperimentResult, FeatureAdoption, FeedbackSummary
from models.tables import Escalation, Incident, Metric
from tests.conftest import make_config
from tests.insight_helpers import copy_rows, execute, platform_database

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
T = NOW - timedelta(days=1)  # the fixture's sessions start a day ago


def uid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.example.test"))


# (user, event, minutes after T)
EVENTS = [
    ("a", "search", 0), ("a", "vendor_view", 3), ("a", "booking_start", 10),
    ("b", "search", 0), ("b", "vendor_view", 5),
    ("c", "search", 0),
    # Wrong order: the view before the search does not count.
    ("d", "vendor_view", 0), ("d", "search", 5),
    # Completes, but two hours after the search: outside the 1 h window.
    ("e", "search", 0), ("e", "vendor_view", 30), ("e", "booking_start", 120),
    # The first search leads nowhere; a later one completes within the window.
    ("f", "search", 0), ("f", "search", 90), ("f", "vendor_view", 100),
    ("f", "booking_start", 110),
    ("g", "booking_start", 0),
    # Searched 8 days ago (outside the 7-day lookback), viewed and booked recently.
    ("h", "search", -8 * 24 * 60), ("h", "vendor_view", 0), ("h", "booking_start", 5),
    # Steps 2 and 3 swapped: only two steps in order.
    ("i", "search", 0), ("i", "booking_start", 5), ("i", "vendor_view", 10),
    ("j", "page_view", 0),
    # The map: three of the ten active users.
    ("a", "map_view", 20), ("c", "map_view", 20), ("g", "map_view", 20),
]  # fmt: skip
NPS = [10, 10, 9, 9, 9, 8, 7, 6, 2, 0]  # 5 promoters, 2 passives, 3 detractors: NPS 20
RATINGS = [5, 4, 4, 3, 5]  # 4.2
COMMENTS = [
    "Search is slow when I filter by region",
    "The search results took ages",
    "Payment failed twice",
    "My card was declined",
    "The filter does not remember my region",
    "Love it",
]

CONFIG: dict[str, Any] = {
    "funnels": [
        {
            "name": "booking",
            "steps": ["search", "vendor_view", "booking_start"],
            "window": "1h",
            "lookback": "7d",
        }
    ],
    "features": [{"name": "map", "events": ["map_view"], "lookback": "30d"}],
    "feedback": {
        "lookback": "30d",
        "recurring_after": 3,
        "themes": {
            "search": ["search", "filter", "results"],
            "performance": ["slow", "ages"],
            "payments": ["payment", "card"],
        },
    },
    "experiments": [
        {"name": "button", "variants": {"control": 0.5, "treatment": 0.5}},
        {"name": "ranking", "variants": {"control": 0.5, "treatment": 0.5}},
    ],
}


def fill(url: str) -> None:
    copy_rows(
        url,
        "product_events",
        ("user_id", "session_id", "name", "page", "at"),
        [(uid(u), f"s-{u}", name, "/", T + m * MIN) for u, name, m in EVENTS],
    )
    rows = [(uid(f"n{i}"), "nps", s, "", T) for i, s in enumerate(NPS)]
    rows += [(uid(f"r{i}"), "rating", s, "", T) for i, s in enumerate(RATINGS)]
    rows[: len(COMMENTS)] = [
        (user, kind, score, comment, when)
        for (user, kind, score, _, when), comment in zip(rows, COMMENTS, strict=False)
    ]
    # Outside the 30-day lookback: a furious detractor that must not count.
    rows.append((uid("old"), "nps", 0, "search is slow slow slow", NOW - timedelta(days=40)))
    copy_rows(url, "feedback", ("user_id", "kind", "score", "comment", "created_at"), rows)
    assignments = []
    for experiment, control, treatment, converted in (
        ("button", 1000, 1000, {"control": 100, "treatment": 130}),
        ("ranking", 560, 440, {"control": 56, "treatment": 44}),
    ):
        for variant, count in (("control", control), ("treatment", treatment)):
            for n in range(count):
                done = T + MIN if n < converted[variant] else None
                assignments.append((experiment, uid(f"{experiment}{variant}{n}"), variant, T, done))
    copy_rows(
        url,
        "experiment_assignments",
        ("experiment", "user_id", "variant", "assigned_at", "converted_at"),
        assignments,
    )


@pytest.fixture(scope="module")
def platform_url(postgres_server_url: str) -> Iterator[str]:
    with platform_database(postgres_server_url) as url:
        platform_db.apply_schema(Conn.from_url(url))
        fill(url)
        yield url


@pytest.fixture(scope="module")
def config() -> EventopsConfig:
    return make_config(insight=CONFIG)


def test_the_ordered_funnel_counts_users_who_did_steps_in_order_within_the_window(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    summary = run_analytics(config, platform_url, NOW)

    assert summary["funnels"] == {"booking": [7, 5, 2]}
    with session_scope() as session:
        steps = latest_funnel(session, "booking")
    assert [(s.step, s.event, s.users, s.drop_off) for s in steps] == [
        (1, "search", 7, 0),
        (2, "vendor_view", 5, 2),
        (3, "booking_start", 2, 3),
    ]
    assert [s.conversion for s in steps] == pytest.approx([1.0, 5 / 7, 2 / 7])
    assert [s.step_conversion for s in steps] == pytest.approx([1.0, 5 / 7, 2 / 5])


def test_feature_adoption_is_the_share_of_active_users(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    run_analytics(config, platform_url, NOW)

    with session_scope() as session:
        [row] = session.scalars(select(FeatureAdoption))
        recorded = dict(session.execute(select(Metric.name, Metric.value)).all())
    assert (row.feature, row.users, row.active_users, row.share) == ("map", 3, 10, 0.3)
    # The headline figures are metrics too, for rules.
    assert recorded == {
        "funnel.booking.conversion": pytest.approx(2 / 7),
        "feature.map.adoption": 0.3,
        "feedback.nps": 20.0,
    }


def test_feedback_gives_nps_average_rating_and_recurring_themes(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    summary = run_analytics(config, platform_url, NOW)

    assert summary["nps"] == 20.0
    assert summary["recurring_themes"] == ["search"]
    with session_scope() as session:
        [row] = session.scalars(select(FeedbackSummary))
    assert (row.nps_responses, row.promoters, row.passives, row.detractors) == (10, 5, 2, 3)
    assert row.ratings == 5 and row.average_rating == pytest.approx(4.2)
    assert {theme: v["comments"] for theme, v in row.themes.items()} == {
        "search": 3,
        "performance": 2,
        "payments": 2,
    }
    assert row.themes["search"]["recurring"] is True
    assert row.themes["payments"]["examples"] == ["Payment failed twice", "My card was declined"]


def test_a_rerun_for_the_same_hour_replaces_its_rows(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    run_analytics(config, platform_url, NOW)
    run_analytics(config, platform_url, NOW + 5 * MIN)

    with session_scope() as session:
        assert len(session.scalars(select(FeedbackSummary)).all()) == 1
        assert len(latest_funnel(session, "booking")) == 3


def test_an_ab_test_reports_conversion_per_variant_and_the_z_test(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    summary = run_experiments(config, platform_url, NOW)

    button = summary["button"]
    assert button["srm"] is False and button["srm_p_value"] == pytest.approx(1.0)
    control, treatment = button["variants"]["control"], button["variants"]["treatment"]
    assert (control["users"], control["conversions"], control["rate"]) == (1000, 100, 0.1)
    assert (treatment["users"], treatment["conversions"], treatment["rate"]) == (1000, 130, 0.13)
    # Pooled p = 0.115: z = 0.03 / sqrt(0.115 * 0.885 * 2 / 1000) = 2.1027, two-sided p 0.0355.
    assert treatment["z"] == pytest.approx(2.10274, abs=1e-4)
    assert treatment["p_value"] == pytest.approx(0.035488, abs=1e-5)
    assert treatment["significant"] is True
    assert control["p_value"] is None


def test_a_sample_ratio_mismatch_raises_a_warning_incident_that_resolves_when_fixed(
    clean_db: str, platform_url: str, config: EventopsConfig
) -> None:
    summary = run_experiments(config, platform_url, NOW)

    # chi-square = (60^2 / 500) * 2 = 14.4 with 1 degree of freedom: p = 0.000148 < 0.001.
    assert summary["ranking"]["srm"] is True
    assert summary["ranking"]["srm_p_value"] == pytest.approx(1.4770e-4, rel=1e-3)
    with session_scope() as session:
        [incident] = session.scalars(select(Incident))
        steps = session.scalars(select(Escalation).where(Escalation.incident_id == incident.id))
        assert [s.kind for s in steps] == ["opened"]
        assert (incident.fingerprint, incident.severity) == ("experiment-srm:ranking", "warning")
        assert incident.title == "ranking: sample ratio mismatch (p = 0.00015 < 0.001)"
        assert "control 560 (56.0%), treatment 440 (44.0%)" in (incident.summary or "")

    # Running again changes nothing: the same incident stays open, one row set per hour.
    run_experiments(config, platform_url, NOW + 5 * MIN)
    with session_scope() as session:
        assert len(session.scalars(select(Incident)).all()) == 1
        assert len(session.scalars(select(ExperimentResult)).all()) == 4

    # The assignment is fixed: 120 more treatment users, 560/560.
    copy_rows(
        platform_url,
        "experiment_assignments",
        ("experiment", "user_id", "variant", "assigned_at"),
        [("ranking", uid(f"late{n}"), "treatment", NOW) for n in range(120)],
    )
    try:
        fixed = run_experiments(config, platform_url, NOW + timedelta(hours=1))
        assert fixed["ranking"]["srm"] is False
        with session_scope() as session:
            [incident] = session.scalars(select(Incident))
        assert incident.status == "resolved"
    finally:
        execute(platform_url, "DELETE FROM experiment_assignments WHERE assigned_at = %s", (NOW,))
