"""The logs, capacity and reports config sections reject bad input by field path and reason;
JSON lines parse into entries, or into a clear reason they cannot."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.logs.ingest import Malformed, parse_line, parse_time, with_paths_under
from models.config import ConfigError, parse_config
from models.config_reports import LogsConfig, LogSourceConfig, parse_size


def problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_bad_sections_name_the_field_and_the_reason() -> None:
    assert problems(
        {
            "logs": {
                "sources": [
                    {"name": "app", "kind": "application", "path": "/x"},
                    {"name": "app", "kind": "audit", "path": "/y"},
                ],
                "rotation": {"directories": [{"path": "/var/log", "max_size": "lots"}]},
                "patterns": {"burst_window": "soon"},
            },
            "capacity": {"limits": [{"metric": "users", "limit": 0}], "holdout": 1.5},
        }
    ) == [
        "logs.sources[1].kind: Input should be 'application', 'system', 'security' or 'business'",
        "logs.patterns.burst_window: must be a duration such as 30s, 5m or 1h",
        "logs.rotation.directories[0].max_size: must be a size such as 10MB or 1GiB",
        "capacity.limits[0].limit: Input should be greater than 0",
        "capacity.holdout: Input should be less than 1",
    ]
    assert problems(
        {
            "logs": {
                "sources": [
                    {"name": "app", "kind": "application", "path": "/x"},
                    {"name": "app", "kind": "system", "path": "/y"},
                ]
            }
        }
    ) == ["logs.sources: duplicate name 'app' (entries 0 and 1)"]
    assert problems({"reports": {"keep": 0, "colour": "red"}}) == [
        "reports.keep: Input should be greater than or equal to 1",
        "reports.colour: unknown field",
    ]


def test_sizes_read_decimal_and_binary_units() -> None:
    assert [parse_size(v) for v in ("10MB", "1 GiB", "512kb", 2048, "8GB")] == [
        10_000_000,
        1024**3,
        512_000,
        2048,
        8_000_000_000,
    ]
    config = parse_config({"capacity": {"limits": [{"metric": "database_bytes", "limit": "8GB"}]}})
    assert config.capacity.limits[0].limit == 8e9


def test_times_in_iso_8601_or_unix_seconds_or_milliseconds() -> None:
    at = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    assert parse_time("2026-11-27T09:30:00Z") == at
    assert parse_time("2026-11-27T22:30:00+13:00") == at
    assert parse_time("2026-11-27 09:30:00") == at  # no zone: UTC
    assert parse_time(at.timestamp()) == at
    assert parse_time(int(at.timestamp() * 1000)) == at
    for bad, reason in ((None, "no timestamp"), ("noon", "is not ISO 8601"), (True, "no time")):
        with pytest.raises(Malformed, match=reason):
            parse_time(bad)


def test_a_line_becomes_an_entry_with_its_other_keys_as_attributes() -> None:
    source = LogSourceConfig(name="pay", kind="business", path="/x", service="payments")
    line = json.dumps(
        {
            "timestamp": "2026-11-27T09:30:00Z",
            "level": "WARN",
            "message": {"event": "refund"},
            "request_id": "r-1",
        }
    ).encode()
    entry = parse_line(line, source)
    assert entry.at - datetime(2026, 11, 27, 9, 30, tzinfo=UTC) == timedelta(0)
    assert (entry.level, entry.service, entry.message) == (
        "warn",
        "payments",
        '{"event": "refund"}',
    )
    assert entry.attributes == {"request_id": "r-1"}


def test_relative_source_paths_are_under_the_var_directory(tmp_path: Path) -> None:
    config = LogsConfig.model_validate(
        {
            "sources": [
                {"name": "a", "kind": "system", "path": "demo-logs/*.jsonl"},
                {"name": "b", "kind": "system", "path": "/var/log/b.log"},
            ]
        }
    )
    resolved = with_paths_under(config, tmp_path)
    assert [s.path for s in resolved.sources] == [
        f"{tmp_path}/demo-logs/*.jsonl",
        "/var/log/b.log",
    ]
