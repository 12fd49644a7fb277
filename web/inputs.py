"""What the web app takes from outside, bounded before it goes further: JSON bodies and row ids.

A hostile or broken client must get a 4xx, never a 500 (and never a Sentry event):

- JSON bodies are parsed by pydantic-core's parser, which refuses nesting deeper than its
  recursion limit, numbers of more than 4,300 digits, invalid UTF-8 and lone surrogates (a
  string Postgres and every encoder would choke on later) with a ValueError. The stdlib's
  json.loads raised RecursionError on deep nesting, ValueError outside its JSONDecodeError
  on a 5,000-digit integer, and let lone surrogates through.
- Row ids in paths are bounded to the `integer` columns they look up, so an id past
  2**31 - 1 is a 422 from validation, not Postgres' "integer out of range".
"""

from __future__ import annotations

from typing import Annotated, Any

import pydantic_core
from fastapi import Path

# Postgres `integer`: the checks' and incidents' id columns.
INT4_MAX = 2**31 - 1

RowId = Annotated[int, Path(ge=1, le=INT4_MAX, description="A row id (1 to 2147483647).")]


class BadJson(ValueError):
    """The body is not JSON this app accepts; the message says where and why."""


def parse_json(body: bytes) -> Any:
    """The JSON value of a body from outside; BadJson for anything that is not plain JSON:
    invalid UTF-8, lone surrogates, deep nesting, huge numbers, NaN or Infinity."""
    try:
        value = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as error:
        raise BadJson(str(error)) from None
    return value
