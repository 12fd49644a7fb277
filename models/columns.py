"""What a Postgres column can store, read from the SQLAlchemy table definitions, so that config
values are held to their columns at the door: a config `config check` accepts also applies.

A new column or a narrower type is checked without a word more here: the rules follow the
column's SQLAlchemy type (integer widths, varchar lengths, text and JSON that Postgres refuses).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Integer, SmallInteger, String, Table

# Postgres' integer types, narrowest first (SmallInteger and BigInteger subclass Integer).
_INTEGERS: tuple[tuple[type[Integer], str, int], ...] = (
    (SmallInteger, "smallint", 2**15),
    (BigInteger, "bigint", 2**63),
    (Integer, "integer", 2**31),
)


def unstorable_text(text: str) -> str | None:
    """Why Postgres cannot store `text` in a text or JSON column, or None: a NUL character
    (text refuses it, jsonb refuses \\u0000) or a lone surrogate (not UTF-8 at all). The
    reason never quotes the text, which may be a URL with credentials."""
    if "\x00" in text:
        return "holds a NUL character, which Postgres cannot store"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            code = ord(text[error.start])
            return f"holds a lone surrogate (U+{code:04X}), which is not UTF-8 text"
    return None


def _clean_text(text: str) -> bool:
    return "\x00" not in text and (text.isascii() or unstorable_text(text) is None)


class _Rule:
    """What one column type refuses: `problem` judges a value; `all_fine` judges a whole
    column of values at once, mostly in C, so 100,000 checks cost one pass per column."""

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError

    def all_fine(self, values: list[Any]) -> bool:
        return all(self.problem(value) is None for value in values)


class _IntegerRule(_Rule):
    def __init__(self, name: str, bound: int):
        self.name, self.low, self.high = name, -bound, bound - 1

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, int) or self.low <= value <= self.high:
            return None
        limit = f"at most {self.high}" if value > self.high else f"at least {self.low}"
        return f"must be {limit} (the database stores it as a {self.name})"

    def all_fine(self, values: list[Any]) -> bool:
        numbers = [v for v in values if isinstance(v, int)]
        return not numbers or (min(numbers) >= self.low and max(numbers) <= self.high)


class _StringRule(_Rule):
    def __init__(self, length: int | None):
        self.length = length

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        if self.length is not None and len(value) > self.length:
            return (
                f"must be at most {self.length} characters "
                f"(the database stores varchar({self.length}))"
            )
        return unstorable_text(value)

    def all_fine(self, values: list[Any]) -> bool:
        texts = [v for v in values if isinstance(v, str)]
        if self.length is not None and max(map(len, texts), default=0) > self.length:
            return False
        return _clean_text("".join(texts))


class _JsonRule(_Rule):
    def problem(self, value: Any) -> str | None:
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            return "must be a finite number (JSON has no NaN or infinity)"
        pending = [value]
        while pending:
            item = pending.pop()
            if isinstance(item, str):
                if problem := unstorable_text(item):
                    return problem
            elif isinstance(item, dict):
                pending.extend(item.keys())
                pending.extend(item.values())
            elif isinstance(item, list | tuple):
                pending.extend(item)
        return None

    def all_fine(self, values: list[Any]) -> bool:
        # Each object once: 100,000 checks share one default expected_status tuple.
        distinct = list({id(value): value for value in values}.values())
        try:
            dumped = json.dumps(distinct, ensure_ascii=False, allow_nan=False)
        except ValueError:
            return False
        # JSON writes NUL as \u0000, as it does a literal backslash-u0000: `problem` decides.
        return "\\u0000" not in dumped and _clean_text(dumped)


def _rule(column: Column[Any]) -> _Rule | None:
    type_ = column.type
    if isinstance(type_, Integer):
        for kind, name, bound in _INTEGERS:
            if isinstance(type_, kind):
                return _IntegerRule(name, bound)
    if isinstance(type_, String):  # Text and varchar
        return _StringRule(type_.length)
    if isinstance(type_, JSON):  # JSONB subclasses JSON
        return _JsonRule()
    return None  # booleans, floats (Postgres stores NaN and infinity), timestamps


@cache
def _rules(table: Table) -> dict[str, _Rule]:
    return {c.name: rule for c in table.columns if (rule := _rule(c)) is not None}


def rows_problems(table: Table, rows: list[dict[str, Any]]) -> Iterator[tuple[int, str, str]]:
    """(row index, column, reason) for each value in `rows` that `table` cannot store."""
    for column, rule in _rules(table).items():
        values = [row.get(column) for row in rows]
        if rule.all_fine(values):
            continue
        for index, value in enumerate(values):
            if value is not None and (problem := rule.problem(value)):
                yield index, column, problem
