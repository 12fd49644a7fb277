"""Read-only queries against the platform database for the insight duties."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import psycopg

from core.backups.tools import Conn

# A KPI query names its period as :start and :end (SQLAlchemy style, readable in YAML).
_PARAM = re.compile(r"(?<![:\w]):(start|end)\b")
STATEMENT_TIMEOUT_MS = 60_000


def to_psycopg(sql: str) -> str:
    """`:start`/`:end` become psycopg placeholders; `%` and `::casts` survive."""
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


def connect(conn: Conn) -> psycopg.Connection[Any]:
    """A connection whose every transaction is read-only and bounded in time, so a KPI
    query can neither change the platform nor hold its locks for long."""
    db = conn.connect(autocommit=False)
    db.execute("SET default_transaction_read_only = on")
    db.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    db.commit()
    return db


def scalar(db: psycopg.Connection[Any], sql: str, params: Mapping[str, Any]) -> float | None:
    """The first column of the first row as a float (None for no row or NULL)."""
    try:
        row = db.execute(to_psycopg(sql), dict(params)).fetchone()
    finally:
        db.rollback()
    if row is None or row[0] is None:
        return None
    return float(row[0])


def rows(
    db: psycopg.Connection[Any], sql: str, params: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    try:
        return [tuple(r) for r in db.execute(sql, dict(params or {})).fetchall()]
    finally:
        db.rollback()
