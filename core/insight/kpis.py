"""Business KPIs: one SQL query each against the platform database, per calendar period.

Every hour each KPI is measured for its current period to date, stored in `kpi_values`
(natural key: kpi, period start, hourly bucket) and recorded as metric `kpi.<name>` so rules
can alert on it. Hourly counters (registrations, bookings) are recorded as metrics too, for
the hour just ended, so daily sums and baselines work in the rule engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.insight import platform
from core.metrics import record_metric
from models.config import EventopsConfig
from models.config_insight import KpiConfig
from models.insight import KpiValue
from models.tables import Metric

# How far back missing hourly counter samples are filled in (a worker down for a night).
COUNTER_BACKFILL_HOURS = 24


@dataclass(frozen=True)
class KpiReading:
    """A KPI's newest value against its target."""

    name: str
    value: float | None
    target: float
    expected: float  # the target pro rata while a prorated period is in progress
    direction: str
    period: str
    period_start: datetime
    period_end: datetime
    bucket: datetime
    ok: bool | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hour_floor(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def period_bounds(period: str, now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """The calendar day, ISO week (from Monday) or month containing `now`, in `timezone`,
    as UTC instants [start, end)."""
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown period {period!r}")
    # Wall-clock midnights, placed in the zone (DST days are 23 or 25 hours long).
    return (
        start.replace(tzinfo=zone).astimezone(UTC),
        end.replace(tzinfo=zone).astimezone(UTC),
    )


def judge(
    kpi: KpiConfig, value: float | None, start: datetime, end: datetime, now: datetime
) -> tuple[float, bool | None]:
    """(expected, ok): the target, pro rata for an additive KPI whose period is in progress."""
    expected = kpi.target
    if kpi.prorate and now < end:
        expected = kpi.target * max(0.0, (now - start) / (end - start))
    if value is None:
        return expected, None
    ok = value >= expected if kpi.direction == "higher" else value <= expected
    return expected, ok


def _replace_metric(session: Session, name: str, subject: str, value: float, at: datetime) -> None:
    """One sample per (name, subject, at): a rerun replaces it instead of adding another."""
    session.execute(
        delete(Metric).where(Metric.name == name, Metric.subject == subject, Metric.at == at)
    )
    record_metric(session, name, value, subject=subject, at=at)


def compute_kpis(
    session: Session,
    config: EventopsConfig,
    db: psycopg.Connection[Any],
    now: datetime,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Measure every KPI (or those named) for its current period to date; store and record.

    A KPI whose query fails is reported in the summary's `failed` and skipped: one bad query
    does not hide the other eight.
    """
    bucket = hour_floor(now)
    summary: dict[str, Any] = {"bucket": bucket.isoformat(), "kpis": {}, "failed": {}}
    for kpi in config.insight.kpis:
        if names and kpi.name not in names:
            continue
        start, end = period_bounds(kpi.period, now, config.timezone)
        try:
            value = platform.scalar(db, kpi.sql, {"start": start, "end": now})
        except psycopg.Error as error:
            summary["failed"][kpi.name] = str(error).strip().splitlines()[0]
            continue
        expected, ok = judge(kpi, value, start, end, now)
        row = {
            "kpi": kpi.name,
            "period": kpi.period,
            "period_start": start,
            "period_end": end,
            "bucket": bucket,
            "value": value,
            "target": kpi.target,
            "direction": kpi.direction,
            "expected": expected,
            "ok": ok,
            "computed_at": now,
        }
        statement = insert(KpiValue).values(**row)
        session.execute(
            statement.on_conflict_do_update(
                constraint="uq_kpi_values_key",
                set_={
                    k: statement.excluded[k]
                    for k in row
                    if k not in ("kpi", "period_start", "bucket")
                },
            )
        )
        if value is not None:
            _replace_metric(session, f"kpi.{kpi.name}", "platform", value, bucket)
        summary["kpis"][kpi.name] = {"value": value, "expected": round(expected, 4), "ok": ok}
    return summary


def record_counters(
    session: Session,
    config: EventopsConfig,
    db: psycopg.Connection[Any],
    now: datetime,
    backfill_hours: int = COUNTER_BACKFILL_HOURS,
) -> dict[str, Any]:
    """Each counter's value for every completed hour of the last `backfill_hours` that has no
    sample yet, recorded at the hour's end. Zero is recorded too: a rule on a count needs a
    sample for every hour (see docs/alerting.md, min_samples)."""
    last_end = hour_floor(now)
    ends = [last_end - timedelta(hours=h) for h in range(backfill_hours)]
    summary: dict[str, Any] = {"hours": 0, "failed": {}}
    for counter in config.insight.counters:
        done = set(
            session.scalars(
                select(Metric.at).where(
                    Metric.name == counter.name,
                    Metric.subject == "platform",
                    Metric.at.in_(ends),
                )
            )
        )
        for end in sorted(e for e in ends if e not in done):
            try:
                value = platform.scalar(
                    db, counter.sql, {"start": end - timedelta(hours=1), "end": end}
                )
            except psycopg.Error as error:
                summary["failed"][counter.name] = str(error).strip().splitlines()[0]
                break
            record_metric(session, counter.name, value or 0.0, subject="platform", at=end)
            summary["hours"] += 1
    return summary


def latest_kpis(session: Session, names: list[str] | None = None) -> list[KpiReading]:
    """Each KPI's newest value (the latest bucket of its latest period), by name, or in the
    order of `names` when given (KPIs never computed are left out)."""
    newest = (
        select(KpiValue)
        .distinct(KpiValue.kpi)
        .order_by(KpiValue.kpi, KpiValue.bucket.desc(), KpiValue.period_start.desc())
    )
    if names is not None:
        newest = newest.where(KpiValue.kpi.in_(names))
    readings = [
        KpiReading(
            name=row.kpi,
            value=row.value,
            target=row.target,
            expected=row.expected,
            direction=row.direction,
            period=row.period,
            period_start=row.period_start,
            period_end=row.period_end,
            bucket=row.bucket,
            ok=row.ok,
        )
        for row in session.scalars(newest)
    ]
    if names is not None:
        order = {name: i for i, name in enumerate(names)}
        readings.sort(key=lambda r: order[r.name])
    return readings


def kpi_history(
    session: Session, name: str, since: datetime
) -> list[tuple[datetime, float | None]]:
    """(bucket, value) of one KPI since a time, oldest first: for charts."""
    return [
        (bucket, value)
        for bucket, value in session.execute(
            select(KpiValue.bucket, KpiValue.value)
            .where(KpiValue.kpi == name, KpiValue.bucket >= since)
            .order_by(KpiValue.bucket)
        )
    ]


def prune_history(session: Session, older_than: datetime) -> int:
    """Hourly rows of periods that ended before `older_than`, except each period's last."""
    result = session.execute(
        text(
            """
            DELETE FROM kpi_values AS k
            WHERE k.period_end < :older_than
              AND k.bucket < (SELECT max(bucket) FROM kpi_values AS m
                              WHERE m.kpi = k.kpi AND m.period_start = k.period_start)
            """
        ),
        {"older_than": older_than},
    )
    return int(getattr(result, "rowcount", 0) or 0)
