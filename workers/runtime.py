"""One asyncio loop and one long-lived HTTP client per worker process."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from core.netguard import AddressPolicy
from core.probing import make_client

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_client: httpx.AsyncClient | None = None


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on this process's loop (created on first use, kept for the client)."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coroutine)


def http_client() -> httpx.AsyncClient:
    global _client
    if _client is None:
        from workers.settings import get_config

        allow = get_config().network.allow_internal
        _client = make_client(policy=AddressPolicy.from_allow_list(allow))
    return _client


def reset() -> None:
    """Forget what the parent process built; the child makes its own on first use."""
    global _loop, _client
    _loop = None
    _client = None


def close() -> None:
    global _client
    if _client is not None and _loop is not None and not _loop.is_closed():
        _loop.run_until_complete(_client.aclose())
    _client = None
