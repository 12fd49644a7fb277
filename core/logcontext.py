"""Fields every log line carries while code handles one thing: `with log_context(check="stripe"):`.

Context variables, so the fields follow the code across calls and into asyncio tasks started
inside, and never leak into a concurrent task. workers/logging_setup.py writes them on each
line (JSON or text) and binds the Celery task's id and name around each task.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token

_context: ContextVar[Mapping[str, str]] = ContextVar("eventops_log_context", default={})  # noqa: B039


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Every line logged inside carries these fields (None values are left out)."""
    token = bind(**fields)
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: str | None) -> Token[Mapping[str, str]]:
    """Add fields to the current context; undo with `unbind(token)`."""
    current = _context.get()
    return _context.set({**current, **{k: v for k, v in fields.items() if v is not None}})


def unbind(token: Token[Mapping[str, str]]) -> None:
    try:
        _context.reset(token)
    except ValueError:  # bound in another context (another thread): start clean
        _context.set({})


def current() -> Mapping[str, str]:
    return _context.get()
