"""eventops' own data over time: per-minute and per-hour rollups of outcomes, their
watermarks, buckets to re-roll, and the performance reviews written from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class _RollupColumns:
    """One check's outcomes in one time bucket, aggregated.

    `up` and `down` count probes; `missed` counts slots never probed (they count for
    neither uptime nor error rate, as in the rule engine). Latency figures cover outcomes
    with a latency. `histogram` maps a fixed log-scale bucket index (core/rollups.py,
    `latency_bucket`) to a count, only non-empty buckets: it merges by addition, so any
    percentile of any range of buckets can be estimated within the documented bound.
    """

    check_id: Mapped[int] = mapped_column(
        ForeignKey("checks.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    up: Mapped[int] = mapped_column(Integer, default=0)
    down: Mapped[int] = mapped_column(Integer, default=0)
    missed: Mapped[int] = mapped_column(Integer, default=0)
    latency_count: Mapped[int] = mapped_column(Integer, default=0)
    latency_sum: Mapped[float] = mapped_column(default=0.0)
    latency_min: Mapped[float | None]
    latency_max: Mapped[float | None]
    histogram: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)


class OutcomeRollupMinute(_RollupColumns, Base):
    """Outcomes per check per minute of `slot`; rolled every minute behind a settle delay."""

    __tablename__ = "outcome_rollups_minute"
    # Retention deletes by bucket across every check.
    __table_args__ = (Index("ix_outcome_rollups_minute_bucket", "bucket"),)


class OutcomeRollupHour(_RollupColumns, Base):
    """Outcomes per check per hour, summed from the minute rollups; kept longest."""

    __tablename__ = "outcome_rollups_hour"
    __table_args__ = (Index("ix_outcome_rollups_hour_bucket", "bucket"),)


class RollupProgress(Base):
    """How far a resolution is rolled up: every bucket that starts before `watermark` is
    complete (late outcomes aside, which `rollup_dirty` re-rolls)."""

    __tablename__ = "rollup_progress"

    resolution: Mapped[str] = mapped_column(Text, primary_key=True)  # minute | hour
    watermark: Mapped[datetime]
    updated_at: Mapped[datetime]


class RollupDirty(Base):
    """A minute bucket behind the watermark that got a late outcome (written after Postgres
    came back, or a lease that expired): the next rollup recomputes it and its hour."""

    __tablename__ = "rollup_dirty"

    check_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    bucket: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)


class PerformanceReview(Base):
    """A daily or weekly review of response times and uptime per check, as Markdown.
    (period, period_start) is its natural key: a redelivered job rewrites the same row."""

    __tablename__ = "performance_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    period: Mapped[str] = mapped_column(Text)  # daily | weekly
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    created_at: Mapped[datetime]
    report: Mapped[str] = mapped_column(Text)
    figures: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)

    __table_args__ = (
        UniqueConstraint("period", "period_start", name="uq_performance_reviews_period"),
    )
