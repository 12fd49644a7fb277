"""The config is checked at the door: every problem named by its path, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from models.config import ConfigError, load_config, parse_config, parse_duration

VALID = """
platform_url: http://127.0.0.1:8400
checks:
  - name: stripe
    url: "{platform_url}/api/health/stripe"
    interval: 5m
    timeout: 10s
    alert_threshold: 2
channels:
  - name: ops
    url: json://127.0.0.1:9/hook
policies:
  critical:
    steps:
      - after: 0s
        channels: [ops]
"""


def problems_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_the_shipped_default_config_is_valid(repo_root: Path) -> None:
    config = load_config(repo_root / "config" / "eventops.yaml")
    by_name = {c.name: c for c in config.checks}
    assert set(by_name) == {"stripe", "mapbox", "supabase"}
    assert by_name["stripe"].interval == timedelta(minutes=5)
    assert by_name["stripe"].timeout == timedelta(seconds=10)
    assert by_name["stripe"].alert_threshold == 2
    assert by_name["mapbox"].interval == timedelta(minutes=10)
    assert by_name["mapbox"].alert_threshold == 3
    assert by_name["supabase"].interval == timedelta(minutes=2)
    assert by_name["supabase"].alert_threshold == 1


def test_platform_url_is_substituted_into_check_urls(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID)
    config = load_config(path, {"platform_url": "https://eventpros.co.nz/"})
    assert config.checks[0].resolved_url(config.platform_url) == (
        "https://eventpros.co.nz/api/health/stripe"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), (90, 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("250ms", 0.25), ("1d", 86400)],
)
def test_durations_read_as_people_write_them(text: object, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_timeout_not_below_interval_is_named_by_its_path() -> None:
    data = {
        "checks": [
            {"name": "a", "url": "http://x/", "interval": "1m", "timeout": "5s"},
            {"name": "b", "url": "http://x/", "interval": "10s", "timeout": "10s"},
        ]
    }
    assert problems_of(data) == ["checks[1].timeout: must be less than interval"]


def test_every_problem_is_reported_at_once_one_line_each() -> None:
    data = {
        "checks": [
            {"name": "Bad Name", "url": "ftp://x", "interval": "soon", "timeout": "1s"},
            {"name": "ok", "url": "http://x/", "interval": "1m", "timeout": "1s", "colour": 3},
        ],
    }
    problems = problems_of(data)
    assert (
        "checks[0].name: must be lower-case letters, digits, '.', '_' or '-' (max 63)" in problems
    )
    assert "checks[0].url: must start with http://, https:// or {platform_url}" in problems
    assert "checks[0].interval: must be a duration such as 30s, 5m or 1h" in problems
    assert "checks[1].colour: unknown field" in problems


def test_missing_fields_say_they_are_required() -> None:
    assert problems_of({"checks": [{"name": "a", "url": "http://x/"}]}) == [
        "checks[0].interval: is required",
        "checks[0].timeout: is required",
    ]


def test_duplicate_names_and_unknown_channels_are_rejected() -> None:
    data = {
        "checks": [
            {"name": "a", "url": "http://x/", "interval": "1m", "timeout": "1s"},
            {"name": "a", "url": "http://y/", "interval": "1m", "timeout": "1s"},
        ],
        "channels": [{"name": "ops", "url": "json://h/p", "fallback": "sms"}],
        "policies": {"critical": {"steps": [{"after": "0s", "channels": ["ops", "pager"]}]}},
    }
    assert problems_of(data) == [
        "checks[1].name: duplicate name 'a'",
        "policies.critical.steps[0].channels[1]: unknown channel 'pager'",
        "channels[0].fallback: unknown channel 'sms'",
    ]


def test_unknown_severity_in_policies_is_rejected() -> None:
    problems = problems_of({"policies": {"urgent": {}}})
    assert problems[0].startswith("policies.urgent")


def test_dependencies_must_name_checks_and_must_not_form_a_cycle() -> None:
    def check(name: str, *parents: str) -> dict:
        return {
            "name": name,
            "url": "http://x/",
            "interval": "1m",
            "timeout": "1s",
            "depends_on": list(parents),
        }

    assert problems_of({"checks": [check("a", "ghost")]}) == [
        "checks[0].depends_on[0]: unknown check 'ghost'"
    ]
    assert problems_of({"checks": [check("a", "b"), check("b", "c"), check("c", "a")]}) == [
        "checks: depends_on forms a cycle (a -> b -> c -> a)"
    ]


def test_escalation_steps_must_be_in_order_and_matchers_well_formed() -> None:
    data = {
        "channels": [{"name": "ops", "url": "json://h/p"}],
        "policies": {
            "critical": {
                "steps": [
                    {"after": "15m", "channels": ["ops"]},
                    {"after": "5m", "channels": ["ops"]},
                ]
            }
        },
        "maintenance_windows": [
            {
                "name": "db",
                "matchers": ["group=~(unclosed"],
                "day": "sunday",
                "start": "25:00",
                "duration": "2h",
            }
        ],
    }
    problems = problems_of(data)
    assert "policies.critical.steps: steps must be in order of `after`" in problems
    assert any(
        p.startswith("maintenance_windows[0].matchers: 'group=~(unclosed': bad regular")
        for p in problems
    )
    assert any(p.startswith("maintenance_windows[0].start:") for p in problems)


def test_rules_are_validated_field_by_field() -> None:
    data = {
        "rules": [
            {
                "name": "slow",
                "metric": "response_time",
                "op": "≥",
                "threshold": "high",
                "severity": "urgent",
                "window": "0s",
                "checks": ["nope"],
            },
        ]
    }
    problems = problems_of(data)
    assert any(p.startswith("rules[0].op:") for p in problems)
    assert any(p.startswith("rules[0].threshold:") for p in problems)
    assert any(p.startswith("rules[0].severity:") for p in problems)
    assert "rules[0].window: must be positive" in problems


def test_a_rule_naming_an_unknown_check_is_rejected() -> None:
    data = {
        "rules": [
            {
                "name": "slow",
                "metric": "response_time",
                "op": ">",
                "threshold": 5000,
                "severity": "critical",
                "checks": ["nope"],
            }
        ]
    }
    assert problems_of(data) == ["rules[0].checks[0]: unknown check 'nope'"]


def test_an_unknown_time_zone_is_rejected() -> None:
    assert problems_of({"timezone": "Mars/Olympus"}) == [
        "timezone: unknown time zone 'Mars/Olympus'"
    ]


def test_a_config_that_is_not_a_mapping_is_rejected() -> None:
    assert problems_of(["a", "b"]) == ["(top level): must be a mapping of settings"]


def test_broken_yaml_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("checks:\n  - name: a\n    url: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}:")


def test_a_missing_file_is_reported_not_raised(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.problems == [
        f"{tmp_path / 'nope.yaml'}: cannot read (No such file or directory)"
    ]


def test_channel_urls_never_show_in_the_config_repr(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID.replace("json://127.0.0.1:9/hook", "json://user:hunter2@hooks/x"))
    config = load_config(path)
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.model_dump())


def run_config_check(repo_root: Path, config_file: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "config", "check"],
        cwd=repo_root,
        env={"PATH": "/usr/bin:/bin", "EVENTOPS_CONFIG_FILE": str(config_file), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_check_exits_2_with_the_field_path_and_no_traceback(
    repo_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID.replace("timeout: 10s", "timeout: 10m"))
    result = run_config_check(repo_root, path)
    assert result.returncode == 2
    assert "checks[0].timeout: must be less than interval" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_names_a_bad_environment_variable(repo_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID)
    result = run_config_check(repo_root, path, EVENTOPS_DATABASE_URL="mysql://x/y")
    assert result.returncode == 2
    assert "EVENTOPS_DATABASE_URL: must be a postgresql:// URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_accepts_a_good_file(repo_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID)
    result = run_config_check(repo_root, path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 1 checks, 1 channels")


@pytest.mark.parametrize("value", [1e20, "99999999999d", float("inf"), float("nan")])
def test_a_duration_beyond_timedelta_is_a_field_error_not_an_overflow(value: object) -> None:
    with pytest.raises(ValueError, match="finite duration"):
        parse_duration(value)


def test_a_channel_url_apprise_cannot_use_names_its_scheme_and_never_echoes_the_url() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"channels": [{"name": "x", "url": "nosuchscheme://token-123@host/p"}]})
    assert error.value.problems == [
        "channels[0].url: Apprise cannot use this URL ('nosuchscheme' unknown, or a required "
        "part missing)"
    ]
    assert "token-123" not in str(error.value)


def test_an_unknown_key_with_dots_or_spaces_is_quoted_in_its_path() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"network": {"allow internal.x": []}})
    assert error.value.problems == ["network['allow internal.x']: unknown field"]
