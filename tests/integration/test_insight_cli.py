"""`eventops insight ...` against real Postgres and the demo platform database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner, Result

from core.backups.tools import Conn
from demo import platform_db
from tests.insight_helpers import platform_database
from workers.cli import main
from workers.settings import get_config, get_settings


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, ["insight", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def demo_platform(postgres_server_url: str) -> Iterator[str]:
    with platform_database(postgres_server_url) as url:
        platform_db.generate(Conn.from_url(url), scale=0.3, seed=7, days=30, now=datetime.now(UTC))
        yield url


@pytest.fixture
def env(demo_platform: str, clean_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("EVENTOPS_DATABASE_URL", clean_db)
    monkeypatch.setenv("EVENTOPS_PLATFORM_DATABASE_URL", demo_platform)
    monkeypatch.delenv("EVENTOPS_CONFIG_FILE", raising=False)
    get_settings.cache_clear()
    get_config.cache_clear()
    yield
    get_settings.cache_clear()
    get_config.cache_clear()


def test_kpis_are_empty_until_computed_then_listed_against_targets(env: None) -> None:
    assert "No KPI values yet" in cli("kpis").output

    computed = json.loads(cli("kpis", "--now", "--json").output)
    table = cli("kpis").output

    assert [k["name"] for k in computed][:2] == ["userRegistration", "userRetention"]
    assert len(computed) == 9 and all(k["value"] is not None for k in computed)
    header, *rows = table.splitlines()
    assert header.split() == [
        "kpi",
        "value",
        "target",
        "on",
        "pace",
        "for",
        "period",
        "since",
        "verdict",
    ]
    assert len(rows) == 9 and rows[0].startswith("userRegistration")


def test_the_booking_funnel_shows_each_step_with_conversion_and_drop_off(env: None) -> None:
    output = cli("funnel", "booking", "--now").output
    header, *rows = output.splitlines()

    assert header.split()[:3] == ["step", "event", "users"]
    assert [row.split()[1] for row in rows] == [
        "search",
        "vendor_view",
        "booking_start",
        "checkout",
        "booking_complete",
    ]
    assert rows[0].split()[3] == "100.0%"


def test_the_demo_search_ranking_experiment_shows_its_sample_ratio_mismatch(env: None) -> None:
    output = cli("experiment", "search-ranking", "--now").output

    assert "SAMPLE RATIO MISMATCH" in output
    assert "sample ratio: ok" in cli("experiment", "checkout-button", "--now").output


def test_feedback_and_adoption_read_the_demo_platform(env: None) -> None:
    feedback = json.loads(cli("feedback", "--now", "--json").output)
    adoption = {a["feature"]: a for a in json.loads(cli("adoption", "--json").output)}

    assert feedback["nps_responses"] > 0 and -100 <= feedback["nps"] <= 100
    assert feedback["themes"]["payments"]["recurring"] is True
    assert 0 < adoption["map"]["share"] < 1


def test_an_unknown_funnel_or_experiment_is_a_usage_error_naming_the_known_ones(
    env: None,
) -> None:
    result = CliRunner().invoke(main, ["insight", "funnel", "checkout"])
    assert result.exit_code == 2
    assert "unknown funnel 'checkout' (booking, quote)" in result.output


def test_vitals_without_beacons_say_so(env: None) -> None:
    assert cli("vitals", "--window", "24h").output.strip() == "No Web Vitals beacons in the window."
    bad = CliRunner().invoke(main, ["insight", "vitals", "--window", "soon"])
    assert bad.exit_code == 2 and "--window" in bad.output
