"""Web Vitals ingestion: POST /ingest/vitals takes the beacons the `web-vitals` library's
callbacks send from the platform's pages, validates them and writes them to `web_vitals`.

- A beacon is one metric object or an array of up to 100: {name, value, rating, delta, id,
  navigationType, page, device}; extra fields such as `entries` are ignored.
- JSON as `application/json`, or as `text/plain`, which is what `navigator.sendBeacon` sends
  for a string (and which needs no CORS preflight).
- The token (EVENTOPS_INGEST_TOKEN) comes as `Authorization: Bearer <token>` or, because
  sendBeacon cannot set headers, as `?token=<token>`.
- All or nothing: a request with one bad item writes nothing, and the 4xx names the item,
  the field and the reason.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import SecretStr, TypeAdapter, ValidationError

from core.clock import utcnow
from core.insight.vitals import Beacon, store_beacons
from models.config import field_path
from models.db import session_scope
from web.inputs import BadJson, parse_json, read_body
from workers.settings import get_settings

MAX_BODY_BYTES = 64 * 1024
MAX_ITEMS = 100
ACCEPTED_TYPES = ("application/json", "text/plain")

router = APIRouter(prefix="/ingest", tags=["ingest"])
_BEACONS = TypeAdapter(list[Beacon])


def _problem(code: int, detail: str | list[str]) -> HTTPException:
    return HTTPException(status_code=code, detail=detail)


def configured_token(request: Request) -> SecretStr | None:
    """The app's settings if it carries them (web.app does), else the environment's."""
    settings = getattr(request.app.state, "settings", None) or get_settings()
    token: SecretStr | None = getattr(settings, "ingest_token", None)
    return token


def check_token(expected: SecretStr | None, header: str | None, query: str | None) -> None:
    if expected is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "ingestion is off: EVENTOPS_INGEST_TOKEN is not set on the server",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = query
    if header is not None:
        scheme, _, value = header.partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else None
    if not given or not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <token> or ?token=<token>",
            headers={"WWW-Authenticate": "Bearer"},
        )


def parse_beacons(body: bytes) -> list[Beacon]:
    """Validate a batch; raise a 4xx naming each bad item, field and reason."""
    try:
        data: Any = parse_json(body)
    except BadJson as error:
        raise _problem(status.HTTP_400_BAD_REQUEST, f"body is not JSON: {error}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise _problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "body must be a metric object or an array of them",
        )
    if not data:
        raise _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, "the batch is empty")
    if len(data) > MAX_ITEMS:
        raise _problem(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the batch has {len(data)} items; the limit is {MAX_ITEMS}",
        )
    try:
        beacons = _BEACONS.validate_python(data)
    except ValidationError as error:
        raise _problem(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                f"{field_path(tuple(e['loc'])) or '(item)'}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in error.errors()
            ],
        ) from None
    implausible = [
        f"[{i}].value: {reason}" for i, b in enumerate(beacons) if (reason := b.out_of_range())
    ]
    if implausible:
        raise _problem(status.HTTP_422_UNPROCESSABLE_CONTENT, implausible)
    return beacons


def _store(beacons: list[Beacon], received_at: datetime) -> int:
    with session_scope() as session:
        return store_beacons(session, beacons, received_at)


@router.post("/vitals", status_code=status.HTTP_202_ACCEPTED)
async def ingest_vitals(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[
        str | None, Query(description="For sendBeacon, which cannot set headers.")
    ] = None,
) -> dict[str, int]:
    """Store a batch of Web Vitals beacons; 202 with the number stored."""
    check_token(configured_token(request), authorization, token)
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in ACCEPTED_TYPES:
        raise _problem(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"content type {content_type or '(none)'!r}: send application/json or text/plain",
        )
    beacons = parse_beacons(await read_body(request, MAX_BODY_BYTES))
    stored = await run_in_threadpool(_store, beacons, utcnow())
    return {"accepted": len(beacons), "stored": stored}
