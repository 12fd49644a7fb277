"""Config fuzzing: whatever is wrong with a config, the answer is `path: reason` lines.

Hypothesis mutates the shipped config (replaces any value with junk, drops keys, adds
unknown ones) and throws arbitrary text at the YAML loader. Each attempt must end in a
valid config or a ConfigError whose every line names a field path and a reason: never
another exception, which the CLI would show as a traceback.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from models.config import ConfigError, EventopsConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED: dict[str, Any] = yaml.safe_load((ROOT / "config" / "eventops.yaml").read_text())
TOP_LEVEL = set(EventopsConfig.model_fields)

# `checks[2].timeout: must be less than interval`, `(top level): ...`, `file:3:7: ...`
PROBLEM_LINE = re.compile(
    r"^(\(top level\)|\S+:\d+:\d+|([A-Za-z_][\w-]*|\['.*'\]|\[\".*\"\])"
    r"(\[\d+\]|\.[A-Za-z_][\w-]*|\['.*'\]|\[\".*\"\])*): \S"
)

junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=8,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a nested structure a mutation can hit."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


ALL_PATHS = paths(SHIPPED)


def mutate(data: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> None:
    parent: Any = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last]["surprise_field"] = value
    else:
        parent[last] = {"surprise_field": value}


def assert_problems_are_path_and_reason(error: ConfigError) -> None:
    assert error.problems, "a ConfigError must say what is wrong"
    for line in error.problems:
        assert PROBLEM_LINE.match(line), f"not a `path: reason` line: {line!r}"
        head = re.split(r"[.\[:]", line, maxsplit=1)[0]
        assert head in TOP_LEVEL or line.startswith(("(top level)", "[")), line


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.lists(
        st.tuples(
            st.sampled_from(ALL_PATHS),
            st.sampled_from(["replace", "delete", "extra"]),
            junk,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_any_mutation_of_the_shipped_config_is_valid_or_a_field_path_and_reason(
    mutations: list[tuple[tuple[Any, ...], str, Any]],
) -> None:
    data = copy.deepcopy(SHIPPED)
    for path, action, value in mutations:
        try:
            mutate(data, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path's parent
    try:
        parse_config(data)
    except ConfigError as error:
        assert_problems_are_path_and_reason(error)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_as_the_config_file_is_valid_or_a_config_error(
    text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "eventops.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as error:
        assert error.problems


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=1, max_size=64))
def test_bytes_that_are_not_utf8_are_refused_with_the_file_name(
    raw: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "eventops.yaml"
    path.write_bytes(b"checks: []\n# " + raw + b"\xff\xfe")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert error.value.problems == [f"{path}: is not UTF-8 text"]


# Issue 15: a generated config either passes `config check` and applies to a real Postgres,
# or is refused with every line naming where (exit 2 through config_errors_exit_2).

# Text of every kind Postgres refuses or callers trip on: NUL, lone surrogates, long strings.
hostile_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=20),
    st.sampled_from(["", "\x00", "down\ud800", "\udfff", "é" * 300, "x" * 5000]),
)
wide_int = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 32767, 32768, -32769, 2**31 - 1, 2**31, 2**63, 64 * 2**20 + 1]),
)
duration = st.one_of(
    st.builds(
        lambda n, unit: f"{n}{unit}",
        st.integers(min_value=0, max_value=10**12),
        st.sampled_from(["ms", "s", "m", "h", "d", ""]),
    ),
    st.sampled_from(["1m", "5s", "365d", "366d", "900000000d", "999999999d"]),
    st.floats(allow_nan=True, allow_infinity=True),
    wide_int,
)
check_name = st.sampled_from(["api", "web", "db", "a.b-c_d"])


# Per field: values a careful operator writes, and values that probe the edges. A check
# takes hostile values in at most two fields, so most generated configs are valid and reach
# Postgres, and each hostile value is tried next to otherwise good ones.
CHECK_FIELDS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "url": (
        st.sampled_from(
            [
                "{platform_url}/health",
                "http://ops:hunter2@127.0.0.1:9/h?token=s3cret",
                "https://example.com/",
            ]
        ),
        st.builds(lambda t: "http://x/" + t, hostile_text),
    ),
    "interval": (st.sampled_from(["1m", "5m", "1h", "1d", "365d"]), duration),
    "timeout": (st.sampled_from(["250ms", "1s", "5s"]), duration),
    "alert_threshold": (st.integers(min_value=1, max_value=32767), wide_int),
    "recovery_threshold": (st.integers(min_value=1, max_value=32767), wide_int),
    "max_body_bytes": (st.integers(min_value=0, max_value=64 * 2**20), wide_int),
    "expected_status": (
        st.lists(st.integers(min_value=100, max_value=599), min_size=1, max_size=3),
        st.lists(wide_int, max_size=3),
    ),
    "severity": (st.sampled_from(["critical", "warning", "info"]), hostile_text),
    "method": (st.sampled_from(["GET", "HEAD", "POST"]), hostile_text),
    "enabled": (st.booleans(), junk),
    "group": (st.none() | st.sampled_from(["payments", "db"]), hostile_text),
    "impact": (st.none() | st.text(max_size=40), hostile_text),
    "depends_on": (st.nothing(), st.lists(check_name, max_size=2) | junk),
    "category": (st.sampled_from(["availability", "security"]), hostile_text),
}


@st.composite
def generated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """Up to four checks; at most two fields, of one check or platform_url, take hostile
    values, so most configs are valid and reach Postgres, and each hostile value is tried
    next to otherwise good ones."""
    hostile = draw(st.sets(st.sampled_from(["platform_url", *CHECK_FIELDS]), max_size=2))
    names = draw(st.lists(check_name, max_size=4, unique=True))
    target = draw(st.integers(min_value=0, max_value=3))
    checks = []
    for index, name in enumerate(names):
        check: dict[str, Any] = {"name": name}
        for field, (careful, edgy) in CHECK_FIELDS.items():
            if field in hostile and index == target % len(names):
                check[field] = draw(edgy)
            elif field == "depends_on":
                # On earlier checks only: a careful config has no cycle.
                if index and draw(st.booleans()):
                    check[field] = draw(st.lists(st.sampled_from(names[:index]), unique=True))
            elif field in ("url", "interval", "timeout") or draw(st.booleans()):
                check[field] = draw(careful)
        checks.append(check)
    platform_url = "http://127.0.0.1:9"
    if "platform_url" in hostile:
        platform_url = draw(st.builds(lambda t: "http://h/" + t, hostile_text))
    return {"platform_url": platform_url, "checks": checks}


def apply_and_roll_back(config: EventopsConfig) -> None:
    """What `eventops migrate` writes, then a second sync (the update path) and a claim (the
    interval arithmetic in SQL), in a transaction rolled back after."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.orm import Session

    from core.schedule import claim_due_slots, sync_checks
    from models import db

    now = datetime(2026, 1, 1, tzinfo=UTC)
    with db.get_engine().connect() as conn, Session(bind=conn) as session:
        transaction = conn.begin()
        try:
            sync_checks(session, config, now=now)
            sync_checks(session, config, now=now + timedelta(minutes=1))
            claim_due_slots(session, now=now + timedelta(days=400))
            session.flush()
        finally:
            transaction.rollback()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=generated_configs())
def test_a_generated_config_is_refused_with_where_or_passes_check_and_applies_to_postgres(
    data: dict[str, Any], database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "eventops.yaml"
    # ASCII with escapes, so a lone surrogate reaches the YAML reader as `\ud800`.
    path.write_text(yaml.safe_dump(data, allow_unicode=False), encoding="utf-8")
    for source, read in (("data", lambda: parse_config(data)), ("file", lambda: load_config(path))):
        try:
            config = read()
        except ConfigError as error:
            event(f"{source}: refused")
            for line in error.problems:
                if source == "file" and line.startswith(f"{path}:"):
                    continue  # a problem of the file itself: `path:line:column: reason`
                assert PROBLEM_LINE.match(line), f"not a `path: reason` line: {line!r}"
            continue
        event(f"{source}: applied {len(config.checks)} checks")
        apply_and_roll_back(config)


plain_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.dates(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(data=plain_data, flow=st.sampled_from([None, True, False]))
def test_the_config_reader_reads_what_safe_load_reads(data: Any, flow: bool | None) -> None:
    from models.config_yaml import parse_yaml

    text = yaml.safe_dump(data, default_flow_style=flow)
    assert parse_yaml(text) == yaml.safe_load(text)
