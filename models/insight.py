"""Platform insight: KPI history, Web Vitals, funnels, feedback, experiments (docs/insight.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Index, Integer, SmallInteger, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class KpiValue(Base):
    """A KPI's value for one calendar period as computed in one hourly bucket.

    (kpi, period_start, bucket) is the natural key: a rerun in the same hour replaces its
    row, and the history keeps one row per hour per period.
    """

    __tablename__ = "kpi_values"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kpi: Mapped[str] = mapped_column(Text)
    period: Mapped[str] = mapped_column(Text)  # day | week | month
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    bucket: Mapped[datetime]
    value: Mapped[float | None]
    target: Mapped[float]
    direction: Mapped[str] = mapped_column(Text, default="higher")
    # The target this value is judged against: pro rata while the period is in progress.
    expected: Mapped[float]
    ok: Mapped[bool | None]
    computed_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("kpi", "period_start", "bucket", name="uq_kpi_values_key"),
        Index("ix_kpi_values_kpi_bucket", "kpi", "bucket"),
    )


class WebVital(Base):
    """One Web Vitals beacon entry as the `web-vitals` library reports it.

    (name, metric_id) is the natural key: web-vitals reports a metric again with the same id
    when its value changes (CLS grows, reportAllChanges), and the newest value wins.
    """

    __tablename__ = "web_vitals"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    received_at: Mapped[datetime]
    name: Mapped[str] = mapped_column(Text)  # LCP | FID | CLS | FCP | INP | TTFB
    value: Mapped[float] = mapped_column(Float)
    rating: Mapped[str | None] = mapped_column(Text)
    delta: Mapped[float | None] = mapped_column(Float)
    metric_id: Mapped[str] = mapped_column(Text)
    navigation_type: Mapped[str | None] = mapped_column(Text)
    page: Mapped[str] = mapped_column(Text)
    device: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("name", "metric_id", name="uq_web_vitals_name_metric_id"),
        Index("ix_web_vitals_received_at", "received_at"),
    )


class FunnelStep(Base):
    """One step of a funnel computed over (period_start, period_end]."""

    __tablename__ = "funnel_steps"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    funnel: Mapped[str] = mapped_column(Text)
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    step: Mapped[int] = mapped_column(SmallInteger)  # 1-based
    event: Mapped[str] = mapped_column(Text)
    users: Mapped[int] = mapped_column(Integer)
    # Share of step 1's users who got this far, and of the previous step's.
    conversion: Mapped[float | None]
    step_conversion: Mapped[float | None]
    drop_off: Mapped[int] = mapped_column(Integer)  # users lost since the previous step
    computed_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("funnel", "period_end", "step", name="uq_funnel_steps_key"),)


class FeatureAdoption(Base):
    """The share of active users who used a feature over (period_start, period_end]."""

    __tablename__ = "feature_adoption"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    feature: Mapped[str] = mapped_column(Text)
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    users: Mapped[int] = mapped_column(Integer)
    active_users: Mapped[int] = mapped_column(Integer)
    share: Mapped[float | None]
    computed_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("feature", "period_end", name="uq_feature_adoption_key"),)


class FeedbackSummary(Base):
    """Ratings, NPS and recurring themes of the feedback given over (period_start, period_end]."""

    __tablename__ = "feedback_summaries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    period_start: Mapped[datetime]
    period_end: Mapped[datetime] = mapped_column(unique=True)
    nps_responses: Mapped[int] = mapped_column(Integer)
    promoters: Mapped[int] = mapped_column(Integer)
    passives: Mapped[int] = mapped_column(Integer)
    detractors: Mapped[int] = mapped_column(Integer)
    nps: Mapped[float | None]
    ratings: Mapped[int] = mapped_column(Integer)
    average_rating: Mapped[float | None]
    # {"theme": {"comments": 4, "recurring": true, "examples": ["..."]}}
    themes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    computed_at: Mapped[datetime]


class ExperimentResult(Base):
    """One variant of an A/B test as computed at `computed_for` (the hour)."""

    __tablename__ = "experiment_results"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    experiment: Mapped[str] = mapped_column(Text)
    computed_for: Mapped[datetime]
    variant: Mapped[str] = mapped_column(Text)
    users: Mapped[int] = mapped_column(Integer)
    conversions: Mapped[int] = mapped_column(Integer)
    rate: Mapped[float | None]
    expected_share: Mapped[float]
    # Against the control (None for the control itself): two-proportion z-test, two-sided.
    z: Mapped[float | None]
    p_value: Mapped[float | None]
    significant: Mapped[bool | None]
    # Sample ratio mismatch over all variants (chi-square goodness of fit): same on each row.
    srm_p_value: Mapped[float | None]
    computed_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("experiment", "computed_for", "variant", name="uq_experiment_results_key"),
    )
