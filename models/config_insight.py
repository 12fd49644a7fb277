"""The `insight:` config section: KPIs, hourly counters, Web Vitals thresholds, funnels,
feature adoption, feedback themes and A/B tests (docs/insight.md).

Kept apart from models/config.py, and free of imports from it, so models/config.py can
import this module at its top without a cycle.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

VitalName = Literal["LCP", "FID", "CLS", "FCP", "INP", "TTFB"]
VITAL_NAMES: tuple[str, ...] = ("LCP", "FID", "CLS", "FCP", "INP", "TTFB")

# The seed's thresholds (LCP < 2.5 s, FID < 100 ms, CLS < 0.1, FCP < 1.5 s), INP < 200 ms
# since INP replaced FID in Core Web Vitals (March 2024), and web.dev's TTFB 800 ms.
# Milliseconds, except CLS, which has no unit.
DEFAULT_VITAL_THRESHOLDS: dict[str, float] = {
    "LCP": 2500.0,
    "FID": 100.0,
    "CLS": 0.1,
    "FCP": 1500.0,
    "INP": 200.0,
    "TTFB": 800.0,
}

_KPI_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_READ_ONLY_START = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)


def _duration(value: Any) -> timedelta:
    # Imported when used: models.config imports this module at its top.
    from models.config import parse_duration

    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _slug(name: str) -> str:
    if not _SLUG.match(name):
        raise ValueError("must be lower-case letters, digits, '.', '_' or '-' (max 63)")
    return name


def _kpi_name(name: str) -> str:
    if not _KPI_NAME.match(name):
        raise ValueError("must start with a letter and hold only letters, digits and '_'")
    return name


def _positive(duration: timedelta) -> timedelta:
    if duration <= timedelta(0):
        raise ValueError("must be positive")
    return duration


def _one_select(sql: str) -> str:
    """A KPI query is one SELECT (or WITH ... SELECT); it also runs in a read-only transaction."""
    body = sql.strip().rstrip(";").strip()
    if not _READ_ONLY_START.match(body):
        raise ValueError("must be a SELECT (or WITH ... SELECT) query")
    if ";" in body:
        raise ValueError("must be a single statement (no ';' inside)")
    return body


Slug = Annotated[str, AfterValidator(_slug)]
KpiName = Annotated[str, AfterValidator(_kpi_name)]
Query = Annotated[str, AfterValidator(_one_select)]
Window = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_positive)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KpiConfig(_Strict):
    """A business KPI: one SQL query against the platform database, per calendar period."""

    name: KpiName = Field(
        description="The KPI's name (userRegistration); its metric is kpi.<name>."
    )
    description: str | None = Field(default=None, description="What the number means.")
    sql: Query = Field(
        description="One SELECT returning one number (first column of the first row) for the "
        "period [:start, :end); NULL means no value. Runs read-only on the platform database."
    )
    period: Literal["day", "week", "month"] = Field(
        default="month",
        description="Calendar period in `timezone` the KPI is measured over (ISO weeks start "
        "on Monday). The current period is measured to date.",
    )
    target: float = Field(description="The figure the KPI should reach.")
    direction: Literal["higher", "lower"] = Field(
        default="higher", description="higher: ok when value >= target; lower: when <= target."
    )
    prorate: bool = Field(
        default=False,
        description="An additive count (registrations, revenue): while its period is in "
        "progress it is judged against the target pro rata (on pace).",
    )
    unit: str | None = Field(default=None, description="Shown after the value (NZD, stars).")


class CounterConfig(_Strict):
    """A count written every hour for the hour just ended, as metric `<name>`, for rules."""

    name: Slug = Field(description="Metric name the hourly value is recorded as.")
    sql: Query = Field(description="One SELECT returning one number for [:start, :end).")
    description: str | None = Field(default=None, description="What the count means.")


class VitalsConfig(_Strict):
    """Core Web Vitals: p75 per page and device over a rolling window against thresholds."""

    thresholds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_VITAL_THRESHOLDS),
        description="Good-performance limit of each metric's p75 (ms; CLS unitless).",
    )
    window: Window = Field(
        default=timedelta(hours=1), description="Rolling window the p75 is computed over."
    )
    min_samples: int = Field(
        default=20,
        ge=1,
        description="Fewer beacons than this for a page, device and metric in the window: no "
        "p75 metric is recorded (a p75 of three page loads is noise).",
    )
    retention: Window = Field(
        default=timedelta(days=90), description="Beacons older than this are deleted."
    )
    max_series: int = Field(
        default=500,
        ge=1,
        description="Most page, device and metric series recorded as metrics per run, the "
        "busiest first: the beacon token is public in the page, so junk page names must not "
        "flood the metrics table.",
    )

    @field_validator("thresholds")
    @classmethod
    def _defaults_for_missing(cls, thresholds: dict[str, float]) -> dict[str, float]:
        for name in thresholds:
            if name not in VITAL_NAMES:
                raise ValueError(f"{name!r} is not one of {', '.join(VITAL_NAMES)}")
        return {**DEFAULT_VITAL_THRESHOLDS, **thresholds}


class FunnelConfig(_Strict):
    """A conversion funnel: ordered product events a user goes through."""

    name: Slug = Field(description="The funnel's name (`eventops insight funnel <name>`).")
    steps: list[str] = Field(
        min_length=2, description="Product event names, in order (product_events.name)."
    )
    window: Window = Field(
        default=timedelta(days=1),
        description="Most time from a user's first step to their last for it to count.",
    )
    lookback: Window = Field(
        default=timedelta(days=7), description="The funnel is computed over events this recent."
    )
    description: str | None = Field(default=None, description="What the funnel follows.")


class FeatureConfig(_Strict):
    """A feature whose adoption is the share of active users who used it."""

    name: Slug = Field(description="The feature's name.")
    events: list[str] = Field(min_length=1, description="Product events that mean it was used.")
    lookback: Window = Field(default=timedelta(days=30), description="Active = any event here.")
    target: float | None = Field(default=None, ge=0, le=1, description="Adoption share wanted.")


class FeedbackConfig(_Strict):
    """User feedback: ratings, NPS and recurring themes in comments."""

    lookback: Window = Field(default=timedelta(days=30), description="Feedback this recent.")
    themes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Theme -> keywords; a comment mentioning any keyword (whole word, "
        "case-insensitive) counts once for the theme.",
    )
    recurring_after: int = Field(
        default=3, ge=1, description="Comments that make a theme recurring."
    )


class ExperimentConfig(_Strict):
    """An A/B test: assignments and conversions in the platform's experiment_assignments."""

    name: Slug = Field(description="The experiment as experiment_assignments.experiment names it.")
    variants: dict[str, float] = Field(
        description="Variant -> configured share of traffic (shares sum to 1)."
    )
    control: str | None = Field(
        default=None, description="The variant the others are tested against (default: first)."
    )
    alpha: float = Field(default=0.05, gt=0, lt=1, description="Significance level.")
    srm_p: float = Field(
        default=0.001,
        gt=0,
        lt=1,
        description="Sample ratio mismatch: a chi-square goodness-of-fit p-value below this "
        "raises a warning incident.",
    )
    min_users: int = Field(
        default=100, ge=1, description="Fewer assigned users: no SRM verdict yet."
    )

    @field_validator("variants")
    @classmethod
    def _shares_sum_to_one(cls, variants: dict[str, float]) -> dict[str, float]:
        if len(variants) < 2:
            raise ValueError("needs at least two variants")
        if any(share <= 0 for share in variants.values()):
            raise ValueError("every share must be positive")
        if abs(sum(variants.values()) - 1) > 1e-6:
            raise ValueError(f"shares must sum to 1, not {sum(variants.values()):g}")
        return variants

    @field_validator("control")
    @classmethod
    def _control_is_a_variant(cls, control: str | None, info: Any) -> str | None:
        variants = info.data.get("variants")
        if control is not None and variants is not None and control not in variants:
            raise ValueError(f"{control!r} is not one of the variants")
        return control

    @property
    def control_variant(self) -> str:
        return self.control or next(iter(self.variants))


class InsightConfig(_Strict):
    """Platform insight: business KPIs, Web Vitals, funnels, adoption, feedback, A/B tests."""

    kpis: list[KpiConfig] = Field(
        default_factory=list, description="Business KPIs, computed hourly (docs/insight.md)."
    )
    counters: list[CounterConfig] = Field(
        default_factory=list,
        description="Hourly counts recorded as metrics for rules (user_registrations, bookings).",
    )
    vitals: VitalsConfig = Field(default_factory=VitalsConfig)
    funnels: list[FunnelConfig] = Field(default_factory=list)
    features: list[FeatureConfig] = Field(default_factory=list)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    experiments: list[ExperimentConfig] = Field(default_factory=list)

    @field_validator("kpis", "counters", "funnels", "features", "experiments")
    @classmethod
    def _unique_names(cls, items: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for item in items:
            if item.name in seen:
                raise ValueError(f"duplicate name {item.name!r}")
            seen.add(item.name)
        return items

    def kpi(self, name: str) -> KpiConfig:
        return next(k for k in self.kpis if k.name == name)
