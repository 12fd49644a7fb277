"""The insight duty's pure logic: statistics, ordered funnels, NPS and themes, KPI pacing and
the config section's validation."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.insight.experiments import analyse
from core.insight.feedback import nps, themes_of
from core.insight.funnels import ordered_funnel
from core.insight.kpis import judge
from core.insight.platform import to_psycopg
from core.insight.stats import chi2_sf, chi_square_goodness_of_fit, two_proportion_z
from models.config import ConfigError
from models.config_insight import ExperimentConfig, KpiConfig
from tests.conftest import make_config

T = datetime(2026, 11, 20, tzinfo=UTC)
MIN = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("statistic", "df", "p"),
    [
        (3.841458820694124, 1, 0.05),
        (10.827566170662733, 1, 0.001),
        (7.814727903251178, 3, 0.05),
        (0.5, 4, math.exp(-0.25) * 1.25),  # closed form for df = 4
        (50.0, 2, math.exp(-25)),  # closed form for df = 2
        (0.0, 3, 1.0),
    ],
)
def test_chi_square_survival_matches_the_tables(statistic: float, df: int, p: float) -> None:
    assert chi2_sf(statistic, df) == pytest.approx(p, rel=1e-9)


def test_goodness_of_fit_of_a_perfect_split_is_p_one() -> None:
    assert chi_square_goodness_of_fit([500, 500], [0.5, 0.5]) == (0.0, pytest.approx(1.0))


def test_a_z_test_needs_users_and_some_variation() -> None:
    assert two_proportion_z(0, 0, 5, 10) is None
    assert two_proportion_z(0, 100, 0, 100) is None
    z, p = two_proportion_z(50, 100, 50, 100) or (None, None)
    assert (z, p) == (0.0, 1.0)


def test_three_variants_are_each_tested_against_control_and_srm_uses_two_df() -> None:
    experiment = ExperimentConfig(
        name="three", variants={"a": 0.5, "b": 0.25, "c": 0.25}, min_users=10
    )
    outcome = analyse(experiment, {"a": (500, 50), "b": (250, 25), "c": (250, 40), "z": (3, 0)})
    assert [v.variant for v in outcome.variants] == ["a", "b", "c"]
    assert outcome.variants[0].p_value is None
    assert outcome.variants[1].p_value == pytest.approx(1.0)
    assert outcome.srm is False and outcome.srm_p_value == pytest.approx(1.0)
    assert outcome.unexpected_variants == {"z": 3}


def test_too_few_users_give_no_srm_verdict() -> None:
    experiment = ExperimentConfig(name="small", variants={"a": 0.5, "b": 0.5})
    outcome = analyse(experiment, {"a": (60, 1), "b": (10, 1)})
    assert (outcome.srm_p_value, outcome.srm) == (None, False)


def events(*rows: tuple[str, str, int]) -> list[tuple[str, str, datetime]]:
    return [(user, name, T + minutes * MIN) for user, name, minutes in rows]


def test_a_repeated_step_event_is_matched_in_order() -> None:
    # page_view -> search -> page_view: the second page_view is step 3.
    steps = ["page_view", "search", "page_view"]
    found = ordered_funnel(
        events(("u", "page_view", 0), ("u", "search", 1), ("u", "page_view", 2)), steps, MIN * 60
    )
    assert [s.users for s in found] == [1, 1, 1]


def test_an_empty_funnel_has_no_conversion() -> None:
    found = ordered_funnel([], ["a", "b"], MIN)
    assert [(s.users, s.conversion, s.drop_off) for s in found] == [(0, None, 0), (0, None, 0)]


def test_nps_of_all_passives_is_zero_and_of_nothing_is_none() -> None:
    assert nps([7, 8, 8]) == (0, 3, 0, 0.0)
    assert nps([]) == (0, 0, 0, None)
    assert nps([10, 0]) == (1, 0, 1, 0.0)
    assert nps([9, 9, 9, 6]) == (3, 0, 1, 50.0)


def test_a_theme_counts_each_comment_once_and_matches_word_starts() -> None:
    found = themes_of(
        ["Slow, slow, SLOWLY loading", "a slowish day", "The lowest prices"],
        {"performance": ["slow"]},
        recurring_after=2,
    )
    assert found["performance"]["comments"] == 2  # not "lowest"
    assert found["performance"]["recurring"] is True


def kpi(**fields: Any) -> KpiConfig:
    return KpiConfig.model_validate(
        {"name": "k", "sql": "SELECT 1", "target": 100, "prorate": True} | fields
    )


def test_a_prorated_kpi_is_judged_on_pace_and_a_finished_period_on_the_whole_target() -> None:
    start, end = T, T + timedelta(days=10)
    assert judge(kpi(), 30.0, start, end, T + timedelta(days=3)) == (pytest.approx(30.0), True)
    assert judge(kpi(), 29.0, start, end, T + timedelta(days=3))[1] is False
    assert judge(kpi(), 99.0, start, end, end) == (100.0, False)
    assert judge(kpi(direction="lower", prorate=False), 5.0, start, end, T) == (100.0, True)
    assert judge(kpi(), None, start, end, T)[1] is None


def test_named_parameters_become_psycopg_placeholders_and_casts_and_percents_survive() -> None:
    sql = "SELECT count(*) FROM t WHERE at >= :start AND at < :end AND x::text LIKE 'a%'"
    assert to_psycopg(sql) == (
        "SELECT count(*) FROM t WHERE at >= %(start)s AND at < %(end)s AND x::text LIKE 'a%%'"
    )


@pytest.mark.parametrize(
    ("insight", "problem"),
    [
        (
            {"kpis": [{"name": "k", "sql": "DELETE FROM users", "target": 1}]},
            "insight.kpis[0].sql: must be a SELECT (or WITH ... SELECT) query",
        ),
        (
            {"kpis": [{"name": "k", "sql": "SELECT 1; DROP TABLE users", "target": 1}]},
            "insight.kpis[0].sql: must be a single statement",
        ),
        (
            {"kpis": [{"name": "k", "sql": "SELECT 1", "target": 1, "period": "year"}]},
            "insight.kpis[0].period:",
        ),
        (
            {"experiments": [{"name": "e", "variants": {"a": 0.6, "b": 0.6}}]},
            "insight.experiments[0].variants: shares must sum to 1, not 1.2",
        ),
        (
            {"experiments": [{"name": "e", "variants": {"a": 0.5, "b": 0.5}, "control": "c"}]},
            "insight.experiments[0].control: 'c' is not one of the variants",
        ),
        (
            {"vitals": {"thresholds": {"SPEED": 1}}},
            "insight.vitals.thresholds: 'SPEED' is not one of LCP, FID, CLS, FCP, INP, TTFB",
        ),
        (
            {"funnels": [{"name": "f", "steps": ["only"]}]},
            "insight.funnels[0].steps:",
        ),
        (
            {"funnels": [{"name": "f", "steps": ["a", "b"], "window": "0s"}]},
            "insight.funnels[0].window: must be positive",
        ),
    ],
)
def test_a_bad_insight_section_names_the_field_and_reason(
    insight: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as error:
        make_config(insight=insight)
    assert any(line.startswith(problem) for line in error.value.problems), error.value.problems


def test_the_default_vitals_thresholds_are_the_seeds_with_inp() -> None:
    thresholds = make_config().insight.vitals.thresholds
    assert {k: thresholds[k] for k in ("LCP", "FID", "CLS", "FCP", "INP")} == {
        "LCP": 2500,
        "FID": 100,
        "CLS": 0.1,
        "FCP": 1500,
        "INP": 200,
    }
