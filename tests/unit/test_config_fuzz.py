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
from hypothesis import HealthCheck, given, settings
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
