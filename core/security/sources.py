"""Sources: read the platform's auth, API and data-access events incrementally, from a SQL
query on its database or a JSON-lines file, into the canonical `security_events` table.

Each source keeps a high-water mark (the last id read, or the byte offset in the file) in
`security_detector_state`, written in the same transaction as the rows it covers, so a crash
re-reads at most one batch and the (source, source_key) key stores it once.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy.orm import Session

from core.backups.tools import Conn
from core.security.findings import get_cursor, set_cursor
from models.config_security import REQUIRED_FIELDS, STREAM_FIELDS, SourceConfig

STATEMENT_TIMEOUT_MS = 60_000


class BadEvent(ValueError):
    """A row that cannot be read: the message names the field and the reason."""


@dataclass
class IngestResult:
    source: str
    read: int = 0
    stored: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    # A full batch: there may be more to read. `last_at` is the newest event read, up to
    # which the source is known complete (its rows come in time order, near enough).
    full: bool = False
    last_at: datetime | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"read": self.read, "stored": self.stored}
        if self.rejected:
            out["rejected"] = self.rejected
            out["first_error"] = self.errors[0]
        if self.full:
            out["behind"] = True
            out["up_to"] = self.last_at.isoformat() if self.last_at else None
        return out

    def saw(self, row: dict[str, Any]) -> None:
        if self.last_at is None or row["at"] > self.last_at:
            self.last_at = row["at"]


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        at = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            at = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):  # 1e20, NaN: one bad line, not a crash
            raise BadEvent(f"at: {value!r} is out of range for epoch seconds") from None
    elif isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadEvent("at: not an ISO 8601 time or epoch seconds") from None
    else:
        raise BadEvent("at: not an ISO 8601 time or epoch seconds")
    if at.tzinfo is None:
        raise BadEvent("at: has no time zone (write it with +00:00 or Z)")
    return at


def _ip(value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        return str(ipaddress.ip_address(str(value).split("/")[0]))
    except ValueError:
        raise BadEvent(f"ip: {str(value)[:60]!r} is not an IP address") from None


INT_MAX = 2**31 - 1  # the columns are Postgres integers


def _int(name: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise BadEvent(f"{name}: {str(value)[:60]!r} is not a whole number") from None
    if not -INT_MAX <= number <= INT_MAX:
        raise BadEvent(f"{name}: {number} is out of range")
    return number


def _str(value: Any) -> str:
    # Postgres text cannot hold NUL, and attackers put %00 in paths: one such row must not
    # fail the COPY of its whole batch (and then every tick after it).
    return str(value).replace("\x00", "\\x00")


def _text(value: Any) -> str | None:
    return None if value is None else _str(value)


def canonical(source: SourceConfig, raw: dict[str, Any], source_key: str) -> dict[str, Any]:
    """Map one source row to a `security_events` row; BadEvent names what is wrong."""
    get = {name: raw.get(source.column(name)) for name in STREAM_FIELDS[source.stream]}
    for name in REQUIRED_FIELDS[source.stream]:
        if get[name] is None or get[name] == "":
            raise BadEvent(f"{name} (column {source.column(name)!r}): is missing")
    row: dict[str, Any] = {
        "stream": source.stream,
        "source": source.name,
        "source_key": source_key,
        "at": _timestamp(get["at"]),
        "ip": _ip(get.get("ip")),
        "country": _text(get.get("country")),
        "user_agent": _text(get.get("user_agent")),
        "role": _text(get.get("role")),
        "account": None,
        "api_key": None,
        "kind": None,
        "resource": None,
        "rows": None,
        "method": None,
        "path": None,
        "status": None,
    }
    if source.stream == "auth":
        outcome = _str(get["outcome"])
        if outcome in source.failure_values:
            kind = "failure"
        elif outcome in source.success_values:
            kind = "success"
        else:
            kind = outcome  # a reset, a signup: kept, judged by nobody for now
        row.update(account=_str(get["account"]).lower(), kind=kind)
    elif source.stream == "api":
        status = _int("status", get["status"])
        if status is None or not 100 <= status <= 599:
            raise BadEvent(f"status: {get['status']!r} is not an HTTP status")
        row.update(
            api_key=_text(get.get("key")),
            method=_text(get.get("method")),
            path=_str(get["path"]),
            status=status,
        )
    else:
        rows = _int("rows", get.get("rows"))
        row.update(
            account=_str(get["account"]),
            resource=_str(get["resource"]),
            kind=_str(get["action"]),
            rows=1 if rows is None else rows,
        )
    return row


COLUMNS = (
    "stream", "source", "source_key", "at", "ip", "account", "api_key", "kind", "role",
    "resource", "rows", "method", "path", "status", "user_agent", "country",
)  # fmt: skip


def store(session: Session, rows: list[dict[str, Any]]) -> int:
    """COPY the rows into a scratch table, then insert the ones not stored yet: a batch is one
    round trip, and a row read twice is stored once."""
    if not rows:
        return 0
    driver = session.connection().connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    columns = ", ".join(COLUMNS)
    with driver.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS security_events_incoming"
            f" AS SELECT {columns} FROM security_events WITH NO DATA"
        )
        with cur.copy(f"COPY security_events_incoming ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(row[c] for c in COLUMNS))
        cur.execute(
            f"INSERT INTO security_events ({columns})"
            f" SELECT {columns} FROM security_events_incoming"
            " ON CONFLICT ON CONSTRAINT uq_security_events_source_key DO NOTHING"
        )
        stored = cur.rowcount
        cur.execute("TRUNCATE security_events_incoming")
    return stored


def ingest_query(
    session: Session, source: SourceConfig, platform: Conn, now: datetime
) -> IngestResult:
    """Read the rows after the high-water mark (one batch) and store them."""
    assert source.query is not None
    result = IngestResult(source.name)
    state = f"source:{source.name}"
    cursor = get_cursor(session, state)
    id_column = source.column("id")
    # The source query is wrapped, so the predicate on its id reaches its index.
    sql = f"SELECT * FROM ({source.query}) AS src"
    params: dict[str, Any] = {"limit": source.batch}
    if cursor is not None:
        sql += f' WHERE src."{id_column}" > %(after)s'
        params["after"] = cursor
    sql += f' ORDER BY src."{id_column}" LIMIT %(limit)s'
    with platform.connect(autocommit=False) as db, db.cursor(row_factory=dict_row) as cur:
        # Read-only: a source query can never change the platform's data.
        cur.execute("SET TRANSACTION READ ONLY")
        # Bounded too: a slow source query (a missing index) must not hold the tick.
        cur.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
        raw_rows = cur.execute(sql, params).fetchall()
        db.rollback()
    rows: list[dict[str, Any]] = []
    last = cursor
    for raw in raw_rows:
        key = raw.get(id_column)
        if key is None:
            raise BadEvent(
                f"sources[{source.name}].fields.id: column {id_column!r} is missing or NULL"
            )
        last = str(key)
        try:
            rows.append(canonical(source, raw, last))
            result.saw(rows[-1])
        except BadEvent as error:
            result.rejected += 1
            result.errors.append(f"{source.name} row {last}: {error}")
    result.read = len(raw_rows)
    result.full = result.read >= source.batch
    result.stored = store(session, rows)
    set_cursor(session, state, last, now, _details(session, state, result))
    return result


def ingest_file(session: Session, source: SourceConfig, now: datetime) -> IngestResult:
    """Read whole lines after the saved byte offset (from 0 after a rotation)."""
    assert source.file is not None
    result = IngestResult(source.name)
    state = f"source:{source.name}"
    try:
        stat = os.stat(source.file)
    except FileNotFoundError:
        return result  # not written yet: nothing to read
    cursor = get_cursor(session, state)
    inode, offset = 0, 0
    if cursor:
        saved_inode, saved_offset = (int(part) for part in cursor.split(":"))
        if saved_inode == stat.st_ino and saved_offset <= stat.st_size:
            inode, offset = saved_inode, saved_offset
    inode = stat.st_ino
    rows: list[dict[str, Any]] = []
    with open(source.file, "rb") as handle:
        handle.seek(offset)
        while result.read < source.batch:
            line = handle.readline()
            if not line.endswith(b"\n"):
                break  # a line still being written: read it whole next time
            key = f"{inode}:{offset}"
            offset += len(line)
            if not line.strip():
                continue
            result.read += 1
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise BadEvent("(line): is not a JSON object")
                rows.append(canonical(source, raw, key))
                result.saw(rows[-1])
            except (BadEvent, json.JSONDecodeError, UnicodeDecodeError) as error:
                result.rejected += 1
                result.errors.append(f"{source.file}:{key.split(':')[1]}: {error}")
    result.full = result.read >= source.batch
    result.stored = store(session, rows)
    set_cursor(session, state, f"{inode}:{offset}", now, _details(session, state, result))
    return result


def _details(session: Session, state: str, result: IngestResult) -> dict[str, Any]:
    """Rejected rows are counted and the latest reasons kept, where `security sources` shows
    them: bad input is reported, never silently dropped."""
    from models.security import SecurityDetectorState

    previous = session.get(SecurityDetectorState, state)
    details = dict(previous.details) if previous is not None else {}
    details["rejected"] = int(details.get("rejected", 0)) + result.rejected
    if result.errors:
        details["recent_errors"] = (result.errors + list(details.get("recent_errors", [])))[:20]
    details["last_read"] = result.read
    return details


def ingest(
    session: Session, sources: list[SourceConfig], platform: Conn | None, now: datetime
) -> dict[str, Any]:
    """One batch from every source. Query sources need the platform database."""
    summary: dict[str, Any] = {}
    for source in sources:
        if source.query is not None:
            if platform is None:
                summary[source.name] = {"skipped": "EVENTOPS_PLATFORM_DATABASE_URL is not set"}
                continue
            try:
                summary[source.name] = ingest_query(session, source, platform, now).summary()
            except (psycopg.Error, BadEvent) as error:
                # A broken query (or one without its id column) is the operator's to fix;
                # the other sources still run.
                summary[source.name] = {"error": str(error).strip().splitlines()[0]}
        else:
            summary[source.name] = ingest_file(session, source, now).summary()
    return summary
