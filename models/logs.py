"""Ingested platform logs, read offsets, error patterns, capacity history and reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class LogFile(Base):
    """How far one log file has been read, keyed by its identity rather than its path.

    A file is (device, inode) plus a hash of its first `head_len` bytes: a rotated file keeps
    its identity under its new name and is finished from `offset`; a file truncated and
    rewritten in place, or a new file that reuses a freed inode, has another head and is
    read again from 0.
    """

    __tablename__ = "log_files"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    device: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(Text)
    head_len: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    lines: Mapped[int] = mapped_column(BigInteger, default=0)
    malformed: Mapped[int] = mapped_column(BigInteger, default=0)
    # The last few malformed lines (offset, reason, text cut to 500 characters).
    malformed_sample: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    first_seen_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("source", "device", "inode", name="uq_log_files_identity"),)


class LogEntry(Base):
    """One JSON line; (file_key, line_offset) is its natural key, so a re-read inserts nothing."""

    __tablename__ = "log_entries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)  # application | system | security | business
    at: Mapped[datetime]
    level: Mapped[str] = mapped_column(Text)
    service: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    # Set on error-level entries only: the error pattern the message belongs to.
    fingerprint: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    file_key: Mapped[str] = mapped_column(Text)
    line_offset: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("file_key", "line_offset", name="uq_log_entries_line"),
        Index("ix_log_entries_at", "at"),
        Index(
            "ix_log_entries_fingerprint_at",
            "fingerprint",
            "at",
            postgresql_where=text("fingerprint IS NOT NULL"),
        ),
    )


class ErrorPattern(Base):
    """A group of error messages that differ only in ids, numbers, addresses and paths."""

    __tablename__ = "error_patterns"

    fingerprint: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    service: Mapped[str] = mapped_column(Text)
    template: Mapped[str] = mapped_column(Text)
    example: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    occurrences: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(Text, default="active")  # active | resolved
    # What the latest analysis that saw it called it: new | recurring | regressed.
    classification: Mapped[str] = mapped_column(Text, default="new")
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(Text)
    regressions: Mapped[int] = mapped_column(Integer, default=0)
    regressed_at: Mapped[datetime | None]


class LogCursor(Base):
    """How far a consumer of `log_entries` (the pattern analysis) has read, by entry id."""

    __tablename__ = "log_cursors"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime]


class LogRotation(Base):
    """When a log file was last rotated (logrotate's state file, as a row)."""

    __tablename__ = "log_rotations"

    path: Mapped[str] = mapped_column(Text, primary_key=True)
    last_rotated_at: Mapped[datetime]
    rotations: Mapped[int] = mapped_column(Integer, default=0)
    last_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class CapacitySample(Base):
    """One measurement of one capacity figure; (metric, subject, at) makes a rerun harmless."""

    __tablename__ = "capacity_samples"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    metric: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text, default="platform")
    value: Mapped[float]
    at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("metric", "subject", "at", name="uq_capacity_samples_point"),
    )
