"""The config is checked at the door: every problem named by its path, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

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


# Issue 15, item 4: what `config check` accepts, `migrate` can write.


def one_check(**fields: object) -> dict:
    return {
        "checks": [{"name": "api", "url": "http://x/", "interval": "1m", "timeout": "2s", **fields}]
    }


def test_an_alert_threshold_past_its_smallint_column_is_refused_by_config_check(
    repo_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID.replace("alert_threshold: 2", "alert_threshold: 40000"))
    result = run_config_check(repo_root, path)
    assert result.returncode == 2, result.stdout
    assert (
        "checks[0].alert_threshold: must be at most 32767 (the database stores it as a "
        "smallint)" in result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("impact", "reason"),
    [
        ("down\ud800", "holds a lone surrogate (U+D800), which is not UTF-8 text"),
        ("down\x00", "holds a NUL character, which Postgres cannot store"),
    ],
)
def test_text_postgres_cannot_store_is_refused_with_its_path(impact: str, reason: str) -> None:
    assert problems_of(one_check(impact=impact)) == [f"checks[0].impact: {reason}"]


def test_text_postgres_cannot_store_under_a_key_that_is_no_string_is_named_by_its_path() -> None:
    import datetime

    problems = problems_of({None: {datetime.date(2026, 1, 1): ["x\x00"]}})
    assert "None['2026-01-01'][0]: holds a NUL character, which Postgres cannot store" in problems


def test_a_lone_surrogate_or_nul_written_in_the_yaml_file_is_refused_with_where_it_is(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID.replace("alert_threshold: 2", 'alert_threshold: 2\n    impact: "x\\0"'))
    with pytest.raises(ConfigError) as nul:
        load_config(path)
    assert nul.value.problems == [
        "checks[0].impact: holds a NUL character, which Postgres cannot store"
    ]
    path.write_text(
        VALID.replace("alert_threshold: 2", 'alert_threshold: 2\n    impact: "\\ud800"')
    )
    with pytest.raises(ConfigError) as surrogate:
        load_config(path)
    (problem,) = surrogate.value.problems
    assert problem.startswith(f"{path}:9:")
    assert "invalid Unicode character escape code" in problem


def test_every_integer_column_a_check_is_written_to_is_held_to_its_width() -> None:
    """The rules come from the table definitions: a column added to the row is checked."""
    from sqlalchemy import Integer

    from models.tables import Check

    config = parse_config(one_check())
    row = config.checks[0].row(config.platform_url)
    assert set(row) <= set(Check.__table__.columns.keys())
    fields = {"interval_s": "interval", "timeout_s": "timeout", "group_name": "group"}
    integer_columns = [
        name for name in row if isinstance(Check.__table__.columns[name].type, Integer)
    ]
    assert {"alert_threshold", "recovery_threshold", "max_body_bytes"} <= set(integer_columns)
    for column in integer_columns:
        field = fields.get(column, column)
        wide = config.model_copy(
            update={"checks": [config.checks[0].model_copy(update={field: 2**40})]}
        )
        assert [p.split(":")[0] for p in wide.storage_problems()] == [f"checks[0].{field}"]


def test_column_rules_follow_the_sqlalchemy_types() -> None:
    from sqlalchemy import BigInteger, Column, Integer, MetaData, SmallInteger, String, Table, Text
    from sqlalchemy.dialects.postgresql import JSONB

    from models.columns import rows_problems

    table = Table(
        "t",
        MetaData(),
        Column("small", SmallInteger),
        Column("int", Integer),
        Column("big", BigInteger),
        Column("code", String(5)),
        Column("note", Text),
        Column("doc", JSONB),
    )
    fine = {"small": -32768, "int": 2**31 - 1, "big": -(2**63), "code": "abcde", "note": "é"}
    bad = {
        "small": 32768,
        "int": -(2**31) - 1,
        "big": 2**63,
        "code": "abcdef",
        "note": "\x00",
        "doc": {"k": [1.0, float("nan")]},
    }
    assert list(rows_problems(table, [{**fine, "doc": {"k": ["\u00e9"]}}])) == []
    assert list(rows_problems(table, [fine, bad])) == [
        (1, "small", "must be at most 32767 (the database stores it as a smallint)"),
        (1, "int", "must be at least -2147483648 (the database stores it as a integer)"),
        (1, "big", "must be at most 9223372036854775807 (the database stores it as a bigint)"),
        (1, "code", "must be at most 5 characters (the database stores varchar(5))"),
        (1, "note", "holds a NUL character, which Postgres cannot store"),
        (1, "doc", "must be a finite number (JSON has no NaN or infinity)"),
    ]


def test_a_check_interval_past_a_year_is_refused_before_postgres_overflows_its_timestamps() -> None:
    assert problems_of(one_check(interval="366d")) == ["checks[0].interval: must be at most 365d"]


RULE = {"name": "slow", "metric": "response_time", "op": ">", "threshold": 1, "severity": "info"}


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"rules": [RULE | {"window": "800000d"}]}, "rules[0].window"),
        ({"rules": [{**RULE, "metric": "jobs", "baseline": "800000d"}]}, "rules[0].baseline"),
        ({"rules": [RULE | {"escalate_after": "4000000d"}]}, "rules[0].escalate_after"),
        ({"policies": {"info": {"promote_after": "4000000d"}}}, "policies.info.promote_after"),
        ({"security": {"keep_events": "800000d"}}, "security.keep_events"),
        ({"security": {"failed_logins": {"bantime": 10**12}}}, "security.failed_logins.bantime"),
    ],
)
def test_a_duration_past_a_century_is_refused_before_a_worker_s_date_arithmetic_overflows(
    data: dict, path: str
) -> None:
    # Each passed `config check` and then raised OverflowError at every tick of its worker
    # (`now - window` before the year 1, `now + escalate_after` after 9999).
    assert problems_of(data) == [f"{path}: must be a finite duration of at most 36500d (100 years)"]


# Issue 15, item 5: validation is linear in the number of checks.


def test_a_hundred_thousand_checks_in_one_dependency_chain_validate() -> None:
    count = 100_000
    checks = [
        {
            "name": f"c{n}",
            "url": "http://x/",
            "interval": "1m",
            "timeout": "2s",
            "depends_on": [f"c{n + 1}"] if n + 1 < count else [],
        }
        for n in range(count)
    ]
    config = parse_config({"checks": checks})
    assert len(config.checks) == count


def test_a_dependency_chain_ending_in_a_cycle_is_found_without_recursion() -> None:
    count = 5000
    checks = [
        {
            "name": f"c{n}",
            "url": "http://x/",
            "interval": "1m",
            "timeout": "2s",
            "depends_on": [f"c{(n + 1) % count}"],
        }
        for n in range(count)
    ]
    problems = problems_of({"checks": checks})
    assert len(problems) == 1
    assert problems[0].startswith("checks: depends_on forms a cycle (c0 -> c1 -> c2 -> ")
    assert problems[0].endswith(" -> c4999 -> c0)")


def test_a_check_depending_on_itself_is_an_unknown_check() -> None:
    assert problems_of(one_check(depends_on=["api"])) == [
        "checks[0].depends_on[0]: unknown check 'api'",
        "checks: depends_on forms a cycle (api -> api)",
    ]


def test_a_config_file_over_64_mib_is_refused_naming_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with path.open("w") as handle:
        handle.write(VALID)
        handle.write(("#" * 1023 + "\n") * (64 * 1024))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.problems == [f"{path}: is larger than 64 MiB, the most a config file may be"]


# Issue 15, item 6: hostile files end in `path: reason` and exit 2, never a traceback.


def test_yaml_nested_thousands_deep_is_exit_2_with_where_not_a_recursion_error(
    repo_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        VALID + "insight:\n" + "".join(" " * (2 * i + 2) + f"k{i}:\n" for i in range(900))
    )
    result = run_config_check(repo_root, path)
    assert result.returncode == 2
    assert f"{path}:" in result.stderr
    assert "is nested deeper than 64 levels" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("section", "path", "pattern"),
    [
        ("maintenance_windows", "maintenance_windows[0].matchers", "a{4294967296}"),
        ("signatures", "security.signatures.extra", "a{4294967296}"),
        ("maintenance_windows", "maintenance_windows[0].matchers", "(" * 5000 + ")" * 5000),
        ("signatures", "security.signatures.extra", "(" * 5000 + ")" * 5000),
        ("agents", "security.signatures.scanner_agents", "a{4294967296}"),
    ],
)
def test_a_regex_python_cannot_compile_is_a_problem_at_its_path(
    section: str, path: str, pattern: str
) -> None:
    data: dict = {
        "maintenance_windows": {
            "maintenance_windows": [
                {
                    "name": "w",
                    "matchers": [f"check=~{pattern}"],
                    "day": "sunday",
                    "start": "02:00",
                    "duration": "1h",
                }
            ]
        },
        "signatures": {"security": {"signatures": {"extra": {"mine": pattern}}}},
        "agents": {"security": {"signatures": {"scanner_agents": pattern}}},
    }[section]
    problems = problems_of(data)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: ")
    assert "bad regular expression" in problems[0]


def test_a_regex_with_a_huge_repetition_is_exit_2_from_config_check(
    repo_root: Path, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID + "security:\n  signatures:\n    extra:\n      mine: 'a{4294967296}'\n")
    result = run_config_check(repo_root, path)
    assert result.returncode == 2
    assert "security.signatures.extra: mine: bad regular expression" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "---\n", "~\n"])
def test_an_empty_or_comment_only_file_is_refused_not_read_as_no_checks(
    repo_root: Path, tmp_path: Path, text: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result = run_config_check(repo_root, path)
    assert result.returncode == 2
    assert (
        f"{path}: holds no settings (it is empty or only comments); an empty config would "
        "disable every check" in result.stderr
    )


def test_a_duplicate_key_is_refused_naming_both_lines(repo_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID.replace("    timeout: 10s\n", "    timeout: 10s\n    interval: 1m\n"))
    result = run_config_check(repo_root, path)
    assert result.returncode == 2
    assert f"{path}:8:5: duplicate key 'interval' (first at line 6)" in result.stderr


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("9" * 5000, "as int (Exceeds the limit"),
        ("2026-13-01", "as timestamp (month must be in 1..12)"),
    ],
)
def test_a_scalar_python_cannot_build_is_a_yaml_problem_not_a_value_error(
    tmp_path: Path, value: str, reason: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID.replace("alert_threshold: 2", f"alert_threshold: {value}"))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    (problem,) = error.value.problems
    assert problem.startswith(f"{path}:8:22: cannot read ")
    assert reason in problem


def test_aliases_expanding_past_the_value_limit_are_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    lines += [f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]" for n in range(1, 9)]
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    (problem,) = error.value.problems
    assert "holds more than 5,000,000 values (aliases counted expanded)" in problem


def test_merge_keys_and_anchors_read_as_safe_load_reads_them() -> None:
    from models.config_yaml import parse_yaml

    text = (
        "defaults: &defaults {interval: 1m, timeout: 2s}\n"
        "slow: &slow {max_body_bytes: 9, severity: warning}\n"
        "checks:\n"
        "  - {<<: *defaults, name: a, url: 'http://x/'}\n"
        "  - {<<: [*slow, *defaults], name: b, url: 'http://x/', severity: info}\n"
        "  - &c {name: c, url: 'http://x/', interval: 1m, timeout: 2s, on: yes, at: 2026-01-01}\n"
        "again: *c\n"
    )
    assert parse_yaml(text) == yaml.safe_load(text)
    # Of a list of merged mappings, the earlier gives a key both have (the YAML merge spec).
    merged = parse_yaml("a: &a {k: 1}\nb: &b {k: 2}\nc: {<<: [*a, *b]}\n")
    assert merged["c"] == {"k": 1}


def test_a_merge_of_several_mappings_keeps_safe_load_s_key_order() -> None:
    from models.config_yaml import parse_yaml

    # Dict order is what a config's maps iterate in (signatures.extra, insight's KPIs).
    text = "a: &a {x: 1, k: 1}\nb: &b {y: 2, k: 2}\nc: {<<: [*a, *b], z: 3}\n"
    assert list(parse_yaml(text)["c"].items()) == list(yaml.safe_load(text)["c"].items())
