"""The maintenance section refuses settings that would page for nothing or load Postgres in
a loop, naming the field and why."""

from __future__ import annotations

from typing import Any

import pytest

from models.config import ConfigError, parse_config


def problems(section: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_config({"platform_url": "https://eventpros.example", "maintenance": section})
    return error.value.problems


@pytest.mark.parametrize(
    "field", ["worker_heartbeat_every", "worker_stale_after", "beat_stale_after", "queue_lag_max"]
)
def test_a_zero_duration_is_refused(field: str) -> None:
    assert problems({field: "0s"}) == [f"maintenance.{field}: must be positive"]


def test_a_heartbeat_slower_than_half_the_staleness_limit_is_refused() -> None:
    [line] = problems({"worker_heartbeat_every": "60s", "worker_stale_after": "90s"})
    assert line.startswith("maintenance: worker_heartbeat_every: must be at most half of")
    parse_config(
        {
            "platform_url": "https://eventpros.example",
            "maintenance": {"worker_heartbeat_every": "45s", "worker_stale_after": "90s"},
        }
    )


def test_an_actions_window_that_starts_when_it_ends_is_refused() -> None:
    assert problems({"actions_window": {"start": "03:00", "end": "03:00"}}) == [
        "maintenance.actions_window: end: must differ from start (the window would be empty)"
    ]
