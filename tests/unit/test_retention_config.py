"""The `retention:` section is checked at the door: each bad value names its field and why."""

from __future__ import annotations

import pytest

from models.config import ConfigError, parse_config


def test_the_default_config_keeps_two_weeks_raw_and_two_years_of_hours() -> None:
    retention = parse_config({}).retention
    assert (retention.raw_outcomes_days, retention.minute_rollups_days) == (14, 90)
    assert (retention.hour_rollups_days, retention.partitions_ahead_days) == (730, 7)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"raw_outcomes_days": 0}, "retention.raw_outcomes_days: Input should be greater"),
        ({"partitions_ahead_days": 365}, "retention.partitions_ahead_days: Input should be less"),
        ({"settle_minutes": "soon"}, "retention.settle_minutes: Input should be a valid integer"),
        ({"keep_forever": True}, "retention.keep_forever: unknown field"),
        (
            {"raw_outcomes_days": 30, "minute_rollups_days": 10},
            "retention: minute_rollups_days must be at least raw_outcomes_days",
        ),
        (
            {"minute_rollups_days": 400, "hour_rollups_days": 100},
            "retention: hour_rollups_days must be at least minute_rollups_days",
        ),
    ],
)
def test_a_bad_retention_value_names_the_field_and_the_reason(
    section: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"retention": section})
    assert expected in str(raised.value)
