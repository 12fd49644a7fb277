"""What the web app takes from outside, bounded before it goes further: bodies, JSON and row ids.

A hostile or broken client must get a 4xx, never a 500 (and never a Sentry event):

- Bodies are read in chunks and refused with 413 past a limit (at once when the declared
  Content-Length is over it, so a lying one is cut off too), never read whole first. A
  client that hangs up before sending its body whole is a 400 it never sees: Starlette's
  ClientDisconnect, left unhandled, was a traceback in the log and a Sentry event that
  anyone could cause by starting a login and going away.
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
from fastapi import HTTPException, Path, Request
from starlette.requests import ClientDisconnect

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


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, at most `limit` bytes; HTTPException 413 past it, 400 when the
    client hangs up before sending it whole."""
    too_large = HTTPException(413, f"body: larger than {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:
        raise HTTPException(400, "body: the client hung up before sending it whole") from None
    return bytes(body)
