"""The SQLAlchemy engine (one per process, disposed after fork) and the session scope."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Result, create_engine
from sqlalchemy.orm import Session, sessionmaker

_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None


def make_engine(url: str) -> Engine:
    return create_engine(
        url,
        pool_size=5,
        max_overflow=5,
        # A Postgres restart leaves dead sockets in the pool; test them before use.
        pool_pre_ping=True,
        # A failed statement's error (a traceback, a log line, a Sentry event) would print
        # its bound values: check URLs with credentials, tokens. The SQL alone says enough.
        hide_parameters=True,
        connect_args={"connect_timeout": 5, "application_name": "eventops"},
    )


def configure(url: str) -> Engine:
    """Point this process at a database (tests and the launcher call this directly)."""
    global _engine, _sessions
    if _engine is not None:
        _engine.dispose()
    _engine = make_engine(url)
    _sessions = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def get_engine() -> Engine:
    if _engine is None:
        from workers.settings import get_settings

        url = get_settings().database_url
        if url is None:
            from models.config import ConfigError

            raise ConfigError(
                ["EVENTOPS_DATABASE_URL: is not set (`eventops run` starts an embedded Postgres)"]
            )
        configure(url)
    assert _engine is not None
    return _engine


def dispose_after_fork() -> None:
    """Drop the connections a forked child inherited without closing the parent's sockets."""
    if _engine is not None:
        _engine.dispose(close=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any exception."""
    get_engine()
    assert _sessions is not None
    session = _sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def affected(result: Result[Any]) -> int:
    """Rows an UPDATE, DELETE or INSERT touched (DML results are cursor results)."""
    return cast(CursorResult[Any], result).rowcount
