"""Infrastructure metrics, database maintenance reports and eventops' own heartbeats."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, Float, Integer, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class WorkerHeartbeat(Base):
    """One row per Celery worker node, refreshed by a thread in the worker itself.

    A worker that stops (killed, hung, host gone) stops refreshing `last_seen`, so it shows
    as missing instead of keeping its last healthy figures.
    """

    __tablename__ = "worker_heartbeats"

    hostname: Mapped[str] = mapped_column(Text, primary_key=True)  # celery@host
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime]
    cpu: Mapped[float | None] = mapped_column(Float)  # fractions, 0.83 = 83 %
    memory: Mapped[float | None] = mapped_column(Float)
    disk: Mapped[float | None] = mapped_column(Float)
    queues: Mapped[list[str] | None] = mapped_column(JSONB)


class SelfmonMark(Base):
    """The last time a part of eventops proved it works: `beat` (the heartbeat task ran on
    a worker), `beat-process` (beat's own thread), `escalation-sweeper` (a sweep finished),
    `deadmans-switch` (the last ping sent)."""

    __tablename__ = "selfmon_marks"

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    last_seen: Mapped[datetime]
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class QuerySnapshot(Base):
    """A week's pg_stat_statements figures per query, so next week can spot regressions."""

    __tablename__ = "query_snapshots"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    target: Mapped[str] = mapped_column(Text)  # platform-db | eventops-db
    week: Mapped[date] = mapped_column(Date)  # the Monday (UTC) the snapshot belongs to
    queryid: Mapped[int] = mapped_column(BigInteger)
    query: Mapped[str] = mapped_column(Text)
    calls: Mapped[int] = mapped_column(BigInteger)
    total_ms: Mapped[float]
    mean_ms: Mapped[float]
    rows: Mapped[int] = mapped_column(BigInteger)
    taken_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("target", "week", "queryid", name="uq_query_snapshots_key"),)


class MaintenanceReport(Base):
    """One maintenance report (indexes, queries, vacuum) for one database and slot: the
    findings, the SQL that fixes each, and what was run when fixes are enabled."""

    __tablename__ = "maintenance_reports"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)  # indexes | queries | vacuum
    target: Mapped[str] = mapped_column(Text)
    slot: Mapped[datetime]
    created_at: Mapped[datetime]
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    actions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    text: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        UniqueConstraint("kind", "target", "slot", name="uq_maintenance_reports_key"),
    )
