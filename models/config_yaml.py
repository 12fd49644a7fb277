"""Reading the config file's YAML: bounded in size, depth and alias expansion, with duplicate
keys and an empty file refused, and fast enough for 100,000 checks.

`yaml.safe_load` is not used: its composer recurses (deep nesting is a RecursionError), it
keeps the last of two equal keys without a word, aliases expand without limit, a 5,000-digit
integer or a 13th month is a bare ValueError, and it takes 10 s for 100,000 checks, most of it
building nodes that are thrown away. This builds the data straight from the parser's events
(libyaml's where PyYAML has it), on a stack of its own; scalars are typed by PyYAML's own
resolver and constructors, so every value reads exactly as `safe_load` would read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import ScalarNode

MAX_CONFIG_BYTES = 64 * 1024 * 1024
# The schema's deepest path is six levels (insight.funnels[0].steps[0].match...); a config
# nested more than this deep is a mistake or an attack, and the limit keeps the stack small.
MAX_DEPTH = 64
# Values (keys, scalars, lists, mappings) a document may hold, aliases counted as expanded:
# an alias of an alias of a list is cheap to write and, without a limit, billions of values to
# validate. Validation holds about 200 bytes per value: this bounds it near 1 GB. 100,000
# checks with every field set are about 3.5 million values.
MAX_VALUES = 5_000_000

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP_TAGS = (None, "!", "tag:yaml.org,2002:map")
_SEQ_TAGS = (None, "!", "tag:yaml.org,2002:seq")
_STR = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# The key a merge (`<<`) is noted under while its mapping is open: no YAML value equals it.
_MERGE = object()
# The scalar types a config can hold; !!set, !!omap and application tags are refused.
_SCALAR_TAGS = frozenset(
    "tag:yaml.org,2002:" + name
    for name in ("null", "bool", "int", "float", "str", "binary", "timestamp")
)


class YamlProblem(Exception):
    """Why the file cannot be read as a config; `line` and `column` count from 1 when known."""

    def __init__(self, reason: str, line: int | None = None, column: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.line = line
        self.column = column

    def where(self, path: Path) -> str:
        return f"{path}:{self.line}:{self.column}" if self.line is not None else str(path)


def _at(reason: str, mark: Any) -> YamlProblem:
    return YamlProblem(reason, mark.line + 1, mark.column + 1) if mark else YamlProblem(reason)


@dataclass
class _Open:
    """A mapping or sequence still being read."""

    value: dict[Any, Any] | list[Any]
    anchor: str | None
    weight: int = 1  # values inside, aliases expanded
    key: Any = None
    key_mark: Any = None
    key_pending: bool = False
    key_lines: dict[Any, int] = field(default_factory=dict)
    merge: Any = None


def read_config_file(path: Path) -> Any:
    """The YAML document in the file at `path` as plain data; YamlProblem or OSError if not.

    Refused: a file over MAX_CONFIG_BYTES, text that is not UTF-8, a file with no settings
    (empty, only comments, or null: `migrate` would disable every check), more than one
    document, and everything `parse_yaml` refuses."""
    with path.open("rb") as handle:
        # Read one byte past the limit rather than trust the size: a FIFO or a growing file.
        raw = handle.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise YamlProblem(
            f"is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB, the most a config file may be"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise YamlProblem("is not UTF-8 text") from None
    data = parse_yaml(text)
    if data is None:
        raise YamlProblem(
            "holds no settings (it is empty or only comments); an empty config would disable "
            "every check"
        )
    return data


def parse_yaml(text: str) -> Any:
    """One YAML document as dicts, lists and scalars (None for an empty stream)."""
    loader = _Loader(text)
    try:
        return _build(loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        raise _at(error.problem or error.context or "invalid YAML", mark) from None
    except yaml.YAMLError as error:  # a reader error (a control character) has no mark
        raise YamlProblem(str(error).splitlines()[0] if str(error) else "invalid YAML") from None
    finally:
        loader.dispose()


def _build(loader: Any) -> Any:
    stack: list[_Open] = []
    anchors: dict[str, tuple[Any, int]] = {}
    tags: dict[str, str] = {}  # plain scalar -> its resolved tag: "1m" and "5s" recur
    documents = 0
    root: Any = None

    def add(value: Any, weight: int, mark: Any) -> None:
        nonlocal root
        if not stack:
            root = value
            return
        top = stack[-1]
        top.weight += weight
        if top.weight > MAX_VALUES:
            raise _at(
                f"holds more than {MAX_VALUES:,} values (aliases counted expanded), the most "
                "a config may hold",
                mark,
            )
        if type(top.value) is list:
            top.value.append(value)
        elif top.key_pending:
            top.key_pending = False
            _put(top, value)
        elif isinstance(value, dict | list):
            raise _at("a mapping key must be a plain value, not a list or mapping", mark)
        else:
            top.key, top.key_mark, top.key_pending = value, mark, True

    while True:
        event = loader.get_event()
        kind = type(event)
        if kind is ScalarEvent:
            value, is_merge = _scalar(loader, event, tags)
            top = stack[-1] if stack else None
            if is_merge and top and type(top.value) is dict and not top.key_pending:
                # `<<: *defaults` is a merge key: noted, applied when the mapping closes.
                add(_MERGE, 1, event.start_mark)
            else:
                add(value, 1, event.start_mark)
            if event.anchor is not None:
                anchors[event.anchor] = (value, 1)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            is_map = kind is MappingStartEvent
            if event.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
                raise _at(
                    f"the YAML tag {event.tag!r} cannot be used in a config", event.start_mark
                )
            if stack and type(stack[-1].value) is dict and not stack[-1].key_pending:
                raise _at(
                    "a mapping key must be a plain value, not a list or mapping", event.start_mark
                )
            if len(stack) >= MAX_DEPTH:
                raise _at(f"is nested deeper than {MAX_DEPTH} levels", event.start_mark)
            stack.append(_Open({} if is_map else [], event.anchor))
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            done = stack.pop()
            if done.merge is not None:
                _merge(done, event.start_mark)
            if done.anchor is not None:
                anchors[done.anchor] = (done.value, done.weight)
            add(done.value, done.weight, event.start_mark)
        elif kind is AliasEvent:
            if event.anchor not in anchors:
                if any(o.anchor == event.anchor for o in stack):
                    raise _at(
                        f"alias *{event.anchor} refers to a node that holds it", event.start_mark
                    )
                raise _at(f"alias *{event.anchor} has no anchor before it", event.start_mark)
            add(*anchors[event.anchor], event.start_mark)
        elif kind is DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _at("holds more than one YAML document", event.start_mark)
        elif kind is StreamEndEvent:
            return root


def _scalar(loader: Any, event: Any, tags: dict[str, str]) -> tuple[Any, bool]:
    """The scalar's value as safe_load reads it, and whether it is the merge key `<<`."""
    tag = event.tag
    value = event.value
    if tag is None or tag == "!":
        # Quoted scalars are strings, and so are plain ones whose first character no implicit
        # type starts with (names, URLs): the resolver was a third of the time otherwise.
        if not event.implicit[0] or (value and value[0] not in loader.yaml_implicit_resolvers):
            return value, False
        tag = tags.get(value)
        if tag is None:
            tag = tags[value] = loader.resolve(ScalarNode, value, event.implicit)
    if tag == _STR:
        return value, False
    if tag == _MERGE_TAG:
        return value, True
    if tag not in _SCALAR_TAGS:
        raise _at(f"the YAML tag {tag!r} cannot be used in a config", event.start_mark)
    node = ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
    try:
        return loader.yaml_constructors[tag](loader, node), False
    except (ValueError, OverflowError) as error:
        # int('9' * 5000) and date(2026, 13, 1) raise these, not YAML errors.
        what = tag.rsplit(":", 1)[1]
        raise _at(f"cannot read {_short(value)} as {what} ({error})", event.start_mark) from None


def _put(top: _Open, value: Any) -> None:
    assert isinstance(top.value, dict)
    key, mark = top.key, top.key_mark
    first = top.key_lines.get(key)
    if first is not None:
        shown = "<<" if key is _MERGE else _short(key)
        raise _at(f"duplicate key {shown} (first at line {first})", mark)
    top.key_lines[key] = mark.line + 1
    if key is _MERGE:
        top.merge = value
    else:
        top.value[key] = value


def _merge(done: _Open, mark: Any) -> None:
    """Apply `<<`: keys of the merged mappings the mapping does not set itself; of a list of
    mappings, the first that has a key gives it, keys in safe_load's order."""
    sources = done.merge if isinstance(done.merge, list) else [done.merge]
    if not all(isinstance(source, dict) for source in sources):
        raise _at("<< must be given a mapping or a list of mappings", mark)
    merged: dict[Any, Any] = {}
    for source in sources:
        for key, value in source.items():
            merged.setdefault(key, value)
    assert isinstance(done.value, dict)
    own = dict(done.value)
    done.value.clear()
    done.value.update(merged)
    done.value.update(own)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
