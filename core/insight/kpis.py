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
from sqlalchemy.dialects.postgresql import distinct_on, insert
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


def replace_metric(session: Session, name: str, subject: str, value: float, at: datetime) -> None:
    """One sample per (name, subject, at): a rerun replaces it instead of adding another."""
    session.execute(
        delete(Metric).where(Metric.name == name, Metric.subject == subject, Metric.at == at)
    )
    record_metric(session, name, value, subject=subject, at=at)


def measure_kpis(
    config: EventopsConfig,
    db: psycopg.Connection[Any],
    now: datetime,
    names: list[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every KPI (or those named) for its current period to date: (kpi_values rows, failures).

    A KPI whose query fails is reported in the failures and skipped: one bad query does not
    hide the other eight. Reads the platform only; nothing is written here.
    """
    bucket = hour_floor(now)
    measured: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for kpi in config.insight.kpis:
        if names and kpi.name not in names:
            continue
        start, end = period_bounds(kpi.period, now, config.timezone)
        try:
            value = platform.scalar(db, kpi.sql, {"start": start, "end": now})
        except psycopg.Error as error:
            failed[kpi.name] = str(error).strip().splitlines()[0]
            continue
        expected, ok = judge(kpi, value, start, end, now)
        measured.append(
            {
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
        )
    return measured, failed


def store_kpis(session: Session, measured: list[dict[str, Any]]) -> None:
    """Upsert the rows on (kpi, period_start, bucket) and record each value as metric
    `kpi.<name>` at its bucket, replacing a rerun's sample."""
    for row in measured:
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
        if row["value"] is not None:
            replace_metric(session, f"kpi.{row['kpi']}", "platform", row["value"], row["bucket"])


def missing_counter_hours(
    session: Session,
    config: EventopsConfig,
    now: datetime,
    backfill_hours: int = COUNTER_BACKFILL_HOURS,
) -> dict[str, list[datetime]]:
    """Per counter, the ends of the completed hours of the last `backfill_hours` that have no
    sample yet, oldest first."""
    last_end = hour_floor(now)
    ends = [last_end - timedelta(hours=h) for h in range(backfill_hours)]
    missing = {}
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
        missing[counter.name] = sorted(e for e in ends if e not in done)
    return missing


def measure_counters(
    config: EventopsConfig, db: psycopg.Connection[Any], missing: dict[str, list[datetime]]
) -> tuple[list[tuple[str, str, float, datetime]], dict[str, str]]:
    """Each counter's value for each missing hour, as metric samples recorded at the hour's
    end. Zero is a sample too: a rule on a count needs one every hour (docs/alerting.md)."""
    samples: list[tuple[str, str, float, datetime]] = []
    failed: dict[str, str] = {}
    for counter in config.insight.counters:
        for end in missing.get(counter.name, []):
            try:
                value = platform.scalar(
                    db, counter.sql, {"start": end - timedelta(hours=1), "end": end}
                )
            except psycopg.Error as error:
                failed[counter.name] = str(error).strip().splitlines()[0]
                break
            samples.append((counter.name, "platform", value or 0.0, end))
    return samples, failed


def latest_kpis(session: Session, names: list[str] | None = None) -> list[KpiReading]:
    """Each KPI's newest value (the latest bucket of its latest period), by name, or in the
    order of `names` when given (KPIs never computed are left out)."""
    newest = (
        select(KpiValue)
        .ext(distinct_on(KpiValue.kpi))
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
