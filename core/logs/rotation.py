"""Log rotation: rotate by size and age, gzip, keep N files and D days (logrotate's job).

A log `app.log` is rotated to `app.log.<UTC stamp>` (`app.log.20261127T143000Z`, dateext
style, so nothing is ever renumbered) and then compressed to `....gz`. Two methods:

- **copytruncate** (default): copy the file, then truncate it in place, for writers that keep
  the file open (eventops' own processes, most daemons). The bulk is copied without a lock;
  then, holding an exclusive `flock` on the file, the rest is copied and the file truncated.
  A writer that takes the same lock for each write (`LockingFileWriter` below, or any
  program using flock(2)) can never lose a line. A writer that does not lock and opened the
  file with O_APPEND can lose only a line written in the instant between the final copy and
  the truncate, the caveat logrotate documents for copytruncate.
- **rename**: rename the file and create an empty one at the path, for writers that reopen
  the path (Python's WatchedFileHandler, `open(path, "a")` per write). A line written through
  an already open handle lands in the renamed file.

Either way a rotated file is compressed only on a later run, once it has been quiet for
`compress_grace_s` (logrotate's `delaycompress`): a writer may still hold a renamed file
open, and the log ingester (core/logs/ingest.py) reads the tail of a fresh rotation from
the plain file.

The last rotation time of each file is a row (`log_rotations`), logrotate's state file. A
file seen for the first time is not rotated for age (its age is unknown), only for size.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from core.clock import utcnow
from models.config_reports import RotationTarget
from models.logs import LogRotation

ROTATED = re.compile(r"^(?P<base>.+)\.(?P<stamp>\d{8}T\d{6}Z)(?:-\d+)?(?P<gz>\.gz)?$")
COPY_CHUNK = 1024 * 1024


@dataclass
class RotationSummary:
    directory: str
    rotated: list[str] = field(default_factory=list)
    compressed: int = 0
    deleted: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rotated": len(self.rotated),
            "compressed": self.compressed,
            "deleted": self.deleted,
            "bytes": self.bytes,
            **({"errors": self.errors} if self.errors else {}),
        }


class LockingFileWriter:
    """Appends lines under an exclusive flock, so copytruncate never loses one of them."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write_line(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            os.write(self._fd, data)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


def stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _destination(path: Path, now: datetime) -> Path:
    base = path.with_name(f"{path.name}.{stamp(now)}")
    candidate, n = base, 0
    while candidate.exists() or Path(f"{candidate}.gz").exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def _copy(source: BinaryIO, target: BinaryIO) -> int:
    copied = 0
    while chunk := source.read(COPY_CHUNK):
        target.write(chunk)
        copied += len(chunk)
    return copied


def copytruncate(path: Path, destination: Path) -> int:
    """Copy the file to `destination` and empty it; returns the bytes moved."""
    with path.open("rb") as source, destination.open("xb") as target:
        copied = _copy(source, target)  # the bulk, while writers keep writing
        fcntl.flock(source.fileno(), fcntl.LOCK_EX)
        try:
            copied += _copy(source, target)  # what was appended meanwhile
            target.flush()
            os.fsync(target.fileno())
            os.truncate(path, 0)
        finally:
            fcntl.flock(source.fileno(), fcntl.LOCK_UN)
    shutil.copystat(path, destination)
    return copied


def rename_and_create(path: Path, destination: Path) -> int:
    """Rename the file and create an empty one with the same mode at the path."""
    st = path.stat()
    os.rename(path, destination)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, st.st_mode & 0o7777)
        try:
            os.fchmod(fd, st.st_mode & 0o7777)  # the umask must not narrow it
        finally:
            os.close(fd)
    except FileExistsError:
        pass  # a writer that reopens the path has already created it
    return st.st_size


def compress(path: Path) -> Path:
    """gzip a rotated file next to itself and remove the plain one."""
    target = Path(f"{path}.gz")
    partial = Path(f"{path}.gz.partial")
    with path.open("rb") as source, gzip.open(partial, "wb") as zipped:
        shutil.copyfileobj(source, zipped, COPY_CHUNK)
    os.replace(partial, target)
    path.unlink()
    return target


def logs_in(directory: Path, pattern: str) -> list[Path]:
    """The live logs of a directory: files matching the pattern that are not rotations."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.glob(pattern)
        if p.is_file() and not ROTATED.match(p.name) and not p.name.endswith(".partial")
    )


def rotations_of(path: Path) -> list[tuple[datetime, Path]]:
    """(rotated at, file) of each rotation of `path`, newest first."""
    found = []
    for candidate in path.parent.iterdir():
        match = ROTATED.match(candidate.name)
        if match and match["base"] == path.name:
            at = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            found.append((at, candidate))
    return sorted(found, key=lambda item: (item[0], item[1].name), reverse=True)


def rotate_directory(
    session: Session,
    target: RotationTarget,
    directory: Path,
    now: datetime | None = None,
    compress_grace_s: float = 60.0,
) -> RotationSummary:
    """Rotate what is due in one directory, compress, and apply retention."""
    now = now or utcnow()
    summary = RotationSummary(str(directory))
    for path in logs_in(directory, target.pattern):
        try:
            _rotate_if_due(session, target, path, now, summary)
        except OSError as error:
            summary.errors.append(f"{path}: {error.strerror or error}")
        try:
            _compress_and_prune(target, path, now, compress_grace_s, summary)
        except OSError as error:
            summary.errors.append(f"{path}: {error.strerror or error}")
    return summary


def _rotate_if_due(
    session: Session, target: RotationTarget, path: Path, now: datetime, summary: RotationSummary
) -> None:
    size = path.stat().st_size
    key = str(path.resolve())
    state = session.get(LogRotation, key, with_for_update=True)
    if state is None:
        state = LogRotation(path=key, last_rotated_at=now, rotations=0, last_bytes=0)
        session.add(state)
        due = size >= target.max_size
    else:
        due = size >= target.max_size or (
            size > 0 and now - state.last_rotated_at >= target.max_age
        )
    if not due or size == 0:
        return
    destination = _destination(path, now)
    if target.method == "copytruncate":
        moved = copytruncate(path, destination)
    else:
        moved = rename_and_create(path, destination)
    state.last_rotated_at = now
    state.rotations += 1
    state.last_bytes = moved
    session.flush()
    summary.rotated.append(destination.name)
    summary.bytes += moved


def _compress_and_prune(
    target: RotationTarget, path: Path, now: datetime, grace_s: float, summary: RotationSummary
) -> None:
    rotations = rotations_of(path)
    if target.compress:
        for _, rotated in rotations:
            # Rotated in this very run: left plain until a later run (delaycompress), because
            # a writer may still hold a renamed file open, and the log ingester reads the
            # tail of a fresh rotation (copy or renamed file) from the plain file.
            if rotated.name.endswith(".gz") or rotated.name in summary.rotated:
                continue
            # A renamed file may still get a line from a writer holding it open: wait.
            if time.time() - rotated.stat().st_mtime < grace_s:
                continue
            compress(rotated)
            summary.compressed += 1
        rotations = rotations_of(path)
    cutoff = now - timedelta(days=target.keep_days) if target.keep_days is not None else None
    for index, (at, rotated) in enumerate(rotations):
        if index >= target.keep or (cutoff is not None and at < cutoff):
            rotated.unlink(missing_ok=True)
            summary.deleted += 1


def resolve_directory(target: RotationTarget, var_dir: Path) -> Path:
    return target.path if target.path.is_absolute() else var_dir / target.path
