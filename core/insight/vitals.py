"""Core Web Vitals: validated beacons into `web_vitals`, p75 per page and device over a
rolling window, recorded as metrics `vitals.<metric>.p75` (subject `page|device`) for rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.metrics import record_metrics
from models.config import EventopsConfig
from models.config_insight import DEFAULT_VITAL_THRESHOLDS, VitalName
from models.insight import WebVital
from models.tables import Metric

# Beyond these a value is a broken clock or a broken snippet, not a slow page.
_MAX_MS = 600_000.0
_MAX_CLS = 100.0


class Beacon(BaseModel):
    """One metric as `web-vitals` reports it (onLCP(m => ...)), plus the page and device the
    snippet adds. Extra fields (`entries`, `attribution`) are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True, populate_by_name=True)

    name: VitalName
    value: float = Field(ge=0)
    rating: Literal["good", "needs-improvement", "poor"] | None = None
    delta: float | None = None
    id: str = Field(min_length=1, max_length=128)
    navigation_type: (
        Literal["navigate", "reload", "back-forward", "back-forward-cache", "prerender", "restore"]
        | None
    ) = Field(default=None, alias="navigationType")
    page: str = Field(min_length=1, max_length=1024)
    device: str = Field(default="unknown", pattern=r"^[a-z][a-z0-9-]{0,31}$")

    @field_validator("value", "delta")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("id", "page")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        # Postgres text cannot hold NUL: a 422 here, not a 500 from the INSERT.
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    @field_validator("page")
    @classmethod
    def _path_only(cls, page: str) -> str:
        """Keep the path: query strings and fragments carry ids and personal data, and would
        give every page load a page of its own."""
        path = urlsplit(page).path if "://" in page else page.split("?", 1)[0].split("#", 1)[0]
        if not path.startswith("/"):
            raise ValueError("must be a path such as /vendors or a URL")
        return path

    def out_of_range(self) -> str | None:
        limit = _MAX_CLS if self.name == "CLS" else _MAX_MS
        if self.value > limit:
            return f"{self.value:g} is beyond the plausible maximum {limit:g} for {self.name}"
        return None


def store_beacons(session: Session, beacons: Sequence[Beacon], received_at: datetime) -> int:
    """Write a batch in one statement. A metric reported again (same name and id: CLS grew,
    reportAllChanges) keeps its newest value."""
    if not beacons:
        return 0
    rows = [
        {
            "received_at": received_at,
            "name": b.name,
            "value": b.value,
            "rating": b.rating,
            "delta": b.delta,
            "metric_id": b.id,
            "navigation_type": b.navigation_type,
            "page": b.page,
            "device": b.device,
        }
        for b in beacons
    ]
    # One row per key within the batch too: ON CONFLICT cannot touch a row twice.
    unique = list({(r["name"], r["metric_id"]): r for r in rows}.values())
    statement = insert(WebVital).values(unique)
    session.execute(
        statement.on_conflict_do_update(
            constraint="uq_web_vitals_name_metric_id",
            set_={
                k: statement.excluded[k]
                for k in ("received_at", "value", "rating", "delta", "navigation_type")
            },
        )
    )
    return len(unique)


@dataclass(frozen=True)
class VitalP75:
    page: str
    device: str
    metric: str
    p75: float
    samples: int
    threshold: float | None
    ok: bool | None  # p75 below the threshold (None: no threshold for this metric)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def p75_by_page(
    session: Session,
    since: datetime,
    until: datetime,
    thresholds: dict[str, float] | None = None,
    min_samples: int = 1,
) -> list[VitalP75]:
    """p75 of each metric per page and device over beacons received in (since, until].

    Web Vitals are judged at the 75th percentile of page loads (web.dev, "Defining the Core
    Web Vitals thresholds"); `ok` means strictly below the threshold (LCP < 2.5 s).
    """
    limits = {**DEFAULT_VITAL_THRESHOLDS, **(thresholds or {})}
    samples = func.count().label("samples")
    query = (
        select(
            WebVital.page,
            WebVital.device,
            WebVital.name,
            func.percentile_cont(0.75).within_group(WebVital.value).label("p75"),
            samples,
        )
        .where(and_(WebVital.received_at > since, WebVital.received_at <= until))
        .group_by(WebVital.page, WebVital.device, WebVital.name)
        .having(func.count() >= min_samples)
        .order_by(WebVital.page, WebVital.device, WebVital.name)
    )
    result = []
    for row in session.execute(query):
        threshold = limits.get(row.name)
        p75 = float(row.p75)
        result.append(
            VitalP75(
                page=row.page,
                device=row.device,
                metric=row.name,
                p75=p75,
                samples=int(row.samples),
                threshold=threshold,
                ok=None if threshold is None else p75 < threshold,
            )
        )
    return result


def metric_name(vital: str) -> str:
    return f"vitals.{vital.lower()}.p75"


def subject_for(page: str, device: str) -> str:
    return f"{page}|{device}"


def slot_for(now: datetime, every: timedelta = timedelta(minutes=5)) -> datetime:
    now = now.astimezone(UTC)
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    return now - (now - epoch) % every


def record_vitals(session: Session, config: EventopsConfig, now: datetime) -> dict[str, Any]:
    """p75 per page, device and metric over the configured window ending now, recorded at this
    5-minute slot as `vitals.<metric>.p75` (replacing a rerun's samples for the slot)."""
    vitals = config.insight.vitals
    at = slot_for(now)
    readings = p75_by_page(
        session, now - vitals.window, now, dict(vitals.thresholds), vitals.min_samples
    )
    # The busiest series first; past max_series the rest are dropped (junk page names).
    ranked = sorted(readings, key=lambda r: (-r.samples, r.page, r.device, r.metric))
    readings, dropped = ranked[: vitals.max_series], len(ranked) - vitals.max_series
    names = sorted({metric_name(r.metric) for r in readings})
    if names:
        session.execute(delete(Metric).where(Metric.name.in_(names), Metric.at == at))
    record_metrics(
        session,
        ((metric_name(r.metric), subject_for(r.page, r.device), r.p75, at) for r in readings),
    )
    return {
        "slot": at.isoformat(),
        "series": len(readings),
        "dropped": max(0, dropped),
        "poor": sorted(
            f"{r.metric} {subject_for(r.page, r.device)}" for r in readings if r.ok is False
        ),
    }


def prune_beacons(session: Session, older_than: datetime) -> int:
    result = session.execute(delete(WebVital).where(WebVital.received_at < older_than))
    return int(getattr(result, "rowcount", 0) or 0)
