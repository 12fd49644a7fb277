"""Incremental, rotation-safe ingestion of JSON-lines log files into `log_entries`.

Each file is known by its identity, not its path: (device, inode) plus a hash of its first
bytes (up to HEAD_BYTES). After a rename rotation (`app.log` -> `app.log.1`, a new `app.log`
created), the renamed file is found again by inode in the same directory and finished from
its saved offset, and the new file at the old path is read from 0. A file that shrank below
its offset, or whose first bytes changed (truncated and rewritten, or a freed inode reused),
is read again from 0 under a new generation, so its lines get new natural keys.

Only whole lines are read: a last line without its newline waits for the next run. Entries
and the new offset are committed in one transaction per batch, so a crash re-reads at most
one batch, and the (file_key, line_offset) key makes that re-read insert nothing. Malformed
lines (not JSON, not an object, no message, an unreadable time) are counted per file with the
last few kept as a sample; they never stop the run.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ARRAY, BigInteger, Text, bindparam, select, text
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.logs.patterns import fingerprint_for, is_error
from models.config_reports import LogsConfig, LogSourceConfig, PatternsConfig
from models.logs import LogFile

HEAD_BYTES = 1024
SAMPLE_SIZE = 5
SAMPLE_TEXT = 500
# Compressed rotations are never read: by then their lines were read from the plain file.
SKIPPED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")

Sessions = Callable[[], AbstractContextManager[Session]]


@dataclass
class SourceSummary:
    source: str
    files: int = 0
    entries: int = 0
    malformed: int = 0
    restarts: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "entries": self.entries,
            "malformed": self.malformed,
            "restarts": self.restarts,
            "bytes": self.bytes,
            **({"errors": self.errors} if self.errors else {}),
        }


@dataclass(frozen=True)
class Parsed:
    at: datetime
    level: str
    service: str
    message: str
    attributes: dict[str, Any]


class Malformed(ValueError):
    pass


def head_hash(path: Path, length: int) -> tuple[str, int]:
    """sha256 of the first `length` bytes (fewer if the file is shorter) and how many."""
    with path.open("rb") as handle:
        data = handle.read(length)
    return hashlib.sha256(data).hexdigest()[:32], len(data)


def matched_files(source: LogSourceConfig) -> list[Path]:
    """The files the source's path names: a file, a directory's files, or a glob's matches."""
    pattern = os.path.expanduser(source.path)
    if any(ch in pattern for ch in "*?["):
        paths = [Path(p) for p in sorted(glob.glob(pattern))]
    elif Path(pattern).is_dir():
        paths = sorted(Path(pattern).iterdir())
    else:
        paths = [Path(pattern)]
    return [p for p in paths if p.is_file() and not p.name.endswith(SKIPPED_SUFFIXES)]


def _directories(source: LogSourceConfig, files: list[Path]) -> set[Path]:
    pattern = Path(os.path.expanduser(source.path))
    dirs = {p.parent for p in files}
    if pattern.is_dir():
        dirs.add(pattern)
    elif not any(ch in str(pattern) for ch in "*?[") and pattern.parent.is_dir():
        dirs.add(pattern.parent)
    return dirs


def _lookup(document: dict[str, Any], key: str) -> Any:
    value: Any = document
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def parse_time(value: Any) -> datetime:
    """ISO 8601 (a trailing Z is fine; no zone means UTC) or Unix seconds/milliseconds."""
    if isinstance(value, bool) or value is None:
        raise Malformed("no timestamp")
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise Malformed(f"timestamp {value!r} is out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise Malformed(f"timestamp {value[:40]!r} is not ISO 8601") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise Malformed(f"timestamp {value!r} is not a time")


def _storable(value: Any) -> Any:
    """The document as Postgres can store it: NUL (which neither text nor jsonb holds) made
    visible as \\x00, NaN and Infinity (which jsonb refuses) a Malformed line. One such
    line would otherwise fail its whole batch, and every run after it, on the same bytes."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00")
    if isinstance(value, float) and not math.isfinite(value):
        raise Malformed(f"{value!r} is not a JSON number")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def parse_line(line: bytes, source: LogSourceConfig) -> Parsed:
    """One JSON line into an entry, or Malformed with the reason."""
    try:
        document = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Malformed(f"not JSON ({error.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise Malformed("not a JSON object")
    document = _storable(document)
    mapping = source.fields
    message = _lookup(document, mapping.message)
    if message is None or (isinstance(message, str) and not message.strip()):
        raise Malformed(f"no {mapping.message!r}")
    at = parse_time(_lookup(document, mapping.timestamp))
    level = _lookup(document, mapping.level)
    service = _lookup(document, mapping.service)
    # Mapped top-level keys are columns; everything else is kept as attributes.
    mapped = {
        key
        for key in (mapping.timestamp, mapping.level, mapping.message, mapping.service)
        if "." not in key
    }
    return Parsed(
        at=at,
        level=str(level).lower() if level is not None else "info",
        service=str(service) if service else (source.service or source.name),
        message=message if isinstance(message, str) else json.dumps(message),
        attributes={k: v for k, v in document.items() if k not in mapped},
    )


def _lines(chunk: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """(absolute offset, line) for each whole line of a chunk read at offset `start`."""
    position = 0
    while True:
        end = chunk.find(b"\n", position)
        if end < 0:
            return
        yield start + position, chunk[position:end]
        position = end + 1


def _lock_source(session: Session, source: str) -> bool:
    key = f"eventops.logs.ingest:{source}"
    return bool(
        session.execute(
            text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"), {"key": key}
        ).scalar()
    )


def _unlock_source(session: Session, source: str) -> None:
    key = f"eventops.logs.ingest:{source}"
    session.execute(text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), {"key": key})


def ingest_source(
    sessions: Sessions,
    source: LogSourceConfig,
    config: LogsConfig,
    now: datetime | None = None,
) -> SourceSummary:
    """Read what is new in the source's files since the last run."""
    now = now or utcnow()
    summary = SourceSummary(source.name)
    # One reader per source: a second beat or a redelivered task skips instead of racing.
    with sessions() as lock_session:
        if not _lock_source(lock_session, source.name):
            summary.errors.append("another ingest of this source is running")
            return summary
        try:
            _ingest_files(sessions, source, config, now, summary)
        finally:
            _unlock_source(lock_session, source.name)
    return summary


def _ingest_files(
    sessions: Sessions,
    source: LogSourceConfig,
    config: LogsConfig,
    now: datetime,
    summary: SourceSummary,
) -> None:
    files = matched_files(source)
    if not files:
        # Not fatal (the application may not have logged yet), but worth seeing in Flower.
        summary.errors.append(f"{source.path}: no file matches")
    with sessions() as session:
        known = {
            (row.device, row.inode): row
            for row in session.scalars(select(LogFile).where(LogFile.source == source.name))
        }
    candidates: dict[tuple[int, int], Path] = {}
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue
        candidates[(st.st_dev, st.st_ino)] = path
    # Renamed rotations keep their inode under a new name: look for known files not matched.
    unfinished = {key for key in known if key not in candidates}
    # A known file that shrank or whose first bytes changed was truncated, maybe after a
    # copy (copytruncate): look for the copy.
    truncated = any(
        key in known and _rewritten(path, known[key]) for key, path in candidates.items()
    )
    if unfinished or truncated:
        for directory in _directories(source, files):
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if entry.name.endswith(SKIPPED_SUFFIXES) or not entry.is_file():
                    continue
                st = entry.stat()
                key = (st.st_dev, st.st_ino)
                if key in candidates:
                    continue
                if key in unfinished or (
                    truncated and _copied_offset(Path(entry.path), known, exclude=key)
                ):
                    candidates[key] = Path(entry.path)
    # Older files first, so a rotated file's last lines are read before the new file's first.
    ordered = sorted(candidates.items(), key=lambda item: _mtime(item[1]))
    for key, path in ordered:
        try:
            # A new file, or a known inode now holding another file (a freed inode reused by
            # the next rotation's copy), may be a copy of a known file: start where it was.
            start = (
                _copied_offset(path, known, exclude=key)
                if key not in known or _rewritten(path, known[key])
                else 0
            )
            _ingest_file(sessions, source, config, path, key, known.get(key), start, now, summary)
        except OSError as error:
            summary.errors.append(f"{path}: {error.strerror or error}")


def _copied_offset(
    path: Path, known: dict[tuple[int, int], LogFile], exclude: tuple[int, int] | None = None
) -> int:
    """Where to start a file never seen before. A copy of a known file (logrotate's
    `copytruncate` copies `app.log` to `app.log.1`, then truncates `app.log`) starts where the
    original was read to, as it stood before this run; anything else starts at 0."""
    size = path.stat().st_size
    for key, row in known.items():
        if key == exclude:
            continue
        same_head = head_hash(path, row.head_len) == (row.head_hash, row.head_len)
        if row.head_len and size >= row.head_len and same_head:
            return min(row.offset, size)
    return 0


def _rewritten(path: Path, row: LogFile) -> bool:
    try:
        return path.stat().st_size < row.offset or head_hash(path, row.head_len) != (
            row.head_hash,
            row.head_len,
        )
    except OSError:
        return False


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _ingest_file(
    sessions: Sessions,
    source: LogSourceConfig,
    config: LogsConfig,
    path: Path,
    key: tuple[int, int],
    row: LogFile | None,
    start: int,
    now: datetime,
    summary: SourceSummary,
) -> None:
    device, inode = key
    size = path.stat().st_size
    with sessions() as session:
        if row is None:
            digest, length = head_hash(path, HEAD_BYTES)
            row = LogFile(
                source=source.name,
                device=device,
                inode=inode,
                head_hash=digest,
                head_len=length,
                path=str(path),
                offset=start,
                size=size,
                lines=0,
                malformed=0,
                malformed_sample=[],
                restarts=0,
                first_seen_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
        else:
            row = session.get(LogFile, row.id, with_for_update=True)
            assert row is not None
            digest, length = head_hash(path, row.head_len)
            if length < row.head_len or digest != row.head_hash or size < row.offset:
                # Truncated, or another file under a reused inode: read it again from 0, or
                # from where its original was read to when it is a copy.
                row.offset = start
                row.restarts += 1
                row.lines = 0
                summary.restarts += 1
                row.head_hash, row.head_len = head_hash(path, HEAD_BYTES)
            elif row.head_len < HEAD_BYTES and size > row.head_len:
                # The same file, grown: remember a longer head to tell it apart better.
                row.head_hash, row.head_len = head_hash(path, HEAD_BYTES)
            row.path = str(path)
            row.size = size
            row.updated_at = now
        file_id, offset, generation = row.id, row.offset, row.restarts
    summary.files += 1
    if offset >= size:
        return
    budget = config.max_bytes_per_run
    file_key = f"{file_id}.{generation}"
    patterns = config.patterns
    with path.open("rb") as handle:
        handle.seek(offset)
        while budget > 0:
            chunk = handle.read(min(budget, 4 * 1024 * 1024))
            if not chunk:
                break
            last_newline = chunk.rfind(b"\n")
            if last_newline < 0:
                if len(chunk) < min(budget, 4 * 1024 * 1024):
                    break  # a partial last line: wait for its newline
                # A line longer than the read size: count it malformed and move past it.
                _commit(
                    sessions,
                    file_id,
                    offset + len(chunk),
                    [],
                    [(offset, "line too long", chunk[:SAMPLE_TEXT])],
                    now,
                )
                summary.malformed += 1
                offset += len(chunk)
                budget -= len(chunk)
                continue
            whole = chunk[: last_newline + 1]
            handle.seek(offset + len(whole))
            rows: list[dict[str, Any]] = []
            bad: list[tuple[int, str, bytes]] = []
            batch_end = offset
            for line_offset, line in _lines(whole, offset):
                batch_end = line_offset + len(line) + 1
                stripped = line.strip()
                if not stripped:
                    continue
                try:
                    parsed = parse_line(stripped, source)
                except Malformed as error:
                    bad.append((line_offset, str(error), stripped[:SAMPLE_TEXT]))
                    continue
                rows.append(_entry(source, parsed, patterns, file_key, line_offset))
                if len(rows) >= config.batch_size:
                    _commit(sessions, file_id, batch_end, rows, bad, now)
                    summary.entries += len(rows)
                    summary.malformed += len(bad)
                    rows, bad = [], []
            _commit(sessions, file_id, batch_end, rows, bad, now)
            summary.entries += len(rows)
            summary.malformed += len(bad)
            summary.bytes += len(whole)
            budget -= len(whole)
            offset += len(whole)


def _entry(
    source: LogSourceConfig,
    parsed: Parsed,
    patterns: PatternsConfig,
    file_key: str,
    line_offset: int,
) -> dict[str, Any]:
    fingerprint = (
        fingerprint_for(source.kind, parsed.service, parsed.message)
        if is_error(parsed.level, patterns)
        else None
    )
    return {
        "source": source.name,
        "kind": source.kind,
        "at": parsed.at,
        "level": parsed.level,
        "service": parsed.service,
        "message": parsed.message,
        "fingerprint": fingerprint,
        "attributes": parsed.attributes,
        "file_key": file_key,
        "line_offset": line_offset,
    }


# A whole batch in one statement (arrays unnested server-side): one round trip, where an
# executemany costs one per row. The natural key makes a re-read batch insert nothing.
_ENTRY_COLUMNS = (
    ("source", Text),
    ("kind", Text),
    ("at", TIMESTAMP(timezone=True)),
    ("level", Text),
    ("service", Text),
    ("message", Text),
    ("fingerprint", Text),
    ("attributes", Text),
    ("file_key", Text),
    ("line_offset", BigInteger),
)
_INSERT_ENTRIES = text(
    f"""
    INSERT INTO log_entries ({", ".join(name for name, _ in _ENTRY_COLUMNS)})
    SELECT {
        ", ".join(
            "e.attributes::jsonb" if name == "attributes" else f"e.{name}"
            for name, _ in _ENTRY_COLUMNS
        )
    }
    FROM unnest({", ".join(f":{name}" for name, _ in _ENTRY_COLUMNS)})
        AS e({", ".join(name for name, _ in _ENTRY_COLUMNS)})
    ON CONFLICT ON CONSTRAINT uq_log_entries_line DO NOTHING
    """
).bindparams(*(bindparam(name, type_=ARRAY(kind)) for name, kind in _ENTRY_COLUMNS))


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {name: [] for name, _ in _ENTRY_COLUMNS}
    for row in rows:
        for name, values in columns.items():
            value = row[name]
            values.append(json.dumps(value) if name == "attributes" else value)
    return columns


def _commit(
    sessions: Sessions,
    file_id: int,
    offset: int,
    rows: list[dict[str, Any]],
    bad: list[tuple[int, str, bytes]],
    now: datetime,
) -> None:
    """Entries and the offset after them, in one transaction."""
    with sessions() as session:
        if rows:
            session.execute(_INSERT_ENTRIES, _columns(rows))
        row = session.get(LogFile, file_id, with_for_update=True)
        assert row is not None
        row.offset = max(row.offset, offset)
        row.lines += len(rows)
        row.updated_at = now
        if bad:
            row.malformed += len(bad)
            sample = [
                {
                    "offset": line_offset,
                    "reason": reason,
                    "line": line.decode("utf-8", "replace"),
                }
                for line_offset, reason, line in bad[-SAMPLE_SIZE:]
            ]
            row.malformed_sample = [*row.malformed_sample, *sample][-SAMPLE_SIZE:]


def with_paths_under(config: LogsConfig, base: Path) -> LogsConfig:
    """The config with relative source paths made absolute under `base` (the var directory),
    so a worker finds the same files whatever its working directory."""
    sources = [
        source
        if os.path.isabs(os.path.expanduser(source.path))
        else source.model_copy(update={"path": str(base / source.path)})
        for source in config.sources
    ]
    return config.model_copy(update={"sources": sources})


def ingest_all(
    sessions: Sessions, config: LogsConfig, now: datetime | None = None
) -> dict[str, Any]:
    """Every enabled source; a source that fails is reported and the others go on."""
    now = now or utcnow()
    result: dict[str, Any] = {}
    for source in config.sources:
        if not source.enabled:
            continue
        result[source.name] = ingest_source(sessions, source, config, now).as_dict()
    return result


def prune_entries(session: Session, retention_days: int, now: datetime | None = None) -> int:
    """Delete entries older than the retention; returns how many."""
    now = now or utcnow()
    result = session.execute(
        text("DELETE FROM log_entries WHERE at < :cutoff"),
        {"cutoff": now - _days(retention_days)},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _days(days: int) -> timedelta:
    return timedelta(days=days)
