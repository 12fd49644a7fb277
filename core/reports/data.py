"""The figures of the weekly performance report, read from Postgres for one period.

Response times, uptime and error rates come from the outcome rollups (core/rollups.py),
which stitch hour and minute rollups to the raw edge of the window; where that module is
absent they are computed from raw outcomes. Web Vitals and KPIs come from the insight duty
(core/insight/vitals.py `p75_by_page`, core/insight/kpis.py `latest_kpis`) through guarded
imports: without them the report says "no data" for those sections.
"""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from core.capacity import Advice, Forecast, forecasts, scaling_advice
from models.config import EventopsConfig
from models.logs import ErrorPattern
from models.tables import Check, Incident


@dataclass
class ServiceWeek:
    name: str
    group: str
    probes: int
    uptime: float | None
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    # (hour, p50, p95, p99) for the chart.
    hourly: list[tuple[datetime, float | None, float | None, float | None]] = field(
        default_factory=list
    )
    daily_error_rate: list[tuple[date, float]] = field(default_factory=list)


@dataclass
class IncidentRow:
    id: int
    title: str
    severity: str
    category: str
    status: str
    opened_at: datetime
    resolved_at: datetime | None

    @property
    def minutes_to_resolve(self) -> float | None:
        if self.resolved_at is None:
            return None
        return (self.resolved_at - self.opened_at).total_seconds() / 60


@dataclass
class WeeklyData:
    since: datetime
    until: datetime
    services: list[ServiceWeek]
    incidents: list[IncidentRow]
    vitals: list[Any] | None  # VitalP75 rows, None when the insight duty is absent
    kpis: list[Any] | None  # KpiReading rows, None when the insight duty is absent
    forecasts: list[Forecast]
    scaling: list[Advice]
    error_patterns: list[ErrorPattern]
    source: str  # "rollups" or "raw outcomes"
    notes: list[str] = field(default_factory=list)

    @property
    def days(self) -> list[date]:
        first = self.since.date()
        return [first + timedelta(days=n) for n in range((self.until - self.since).days)]

    def incidents_by_day(self) -> dict[str, Counter[date]]:
        counts: dict[str, Counter[date]] = {s: Counter() for s in ("critical", "warning", "info")}
        for incident in self.incidents:
            counts.setdefault(incident.severity, Counter())[incident.opened_at.date()] += 1
        return counts


def _optional(module: str, name: str) -> Any | None:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _services_from_rollups(
    session: Session, checks: list[Check], since: datetime, until: datetime
) -> list[ServiceWeek] | None:
    rollups = _optional("core.rollups", "window_figures")
    series = _optional("core.rollups", "series")
    if rollups is None or series is None:
        return None
    ids = [c.id for c in checks]
    week = rollups(session, ids, since, until)
    services = []
    for check in checks:
        figures = week.get(check.id)
        if figures is None:
            continue
        hourly = [
            (
                datetime.fromisoformat(point["bucket"]),
                point["p50_ms"],
                point["p95_ms"],
                point["p99_ms"],
            )
            for point in series(session, check.id, since, until, "hour")
        ]
        services.append(
            ServiceWeek(
                name=check.name,
                group=check.group_name,
                probes=figures.probes,
                uptime=figures.uptime,
                error_rate=figures.error_rate,
                p50_ms=figures.percentile(0.5),
                p95_ms=figures.percentile(0.95),
                p99_ms=figures.percentile(0.99),
                hourly=hourly,
            )
        )
    return services


_RAW_WEEK = text(
    """
    SELECT check_id,
           count(*) FILTER (WHERE status IN ('up', 'down')) AS probes,
           count(*) FILTER (WHERE status = 'up') AS up,
           count(*) FILTER (WHERE status = 'down') AS down,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99
    FROM outcomes WHERE slot > :since AND slot <= :until
    GROUP BY check_id
    """
)
_RAW_HOURLY = text(
    """
    SELECT check_id, date_trunc('hour', slot, 'UTC') AS hour,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99
    FROM outcomes WHERE slot > :since AND slot <= :until AND latency_ms IS NOT NULL
    GROUP BY check_id, hour ORDER BY hour
    """
)


def _services_from_raw(
    session: Session, checks: list[Check], since: datetime, until: datetime
) -> list[ServiceWeek]:
    window = {"since": since, "until": until}
    week = {row.check_id: row for row in session.execute(_RAW_WEEK, window)}
    hourly: dict[int, list[Any]] = {}
    for point in session.execute(_RAW_HOURLY, window):
        hourly.setdefault(point.check_id, []).append((point.hour, point.p50, point.p95, point.p99))
    services = []
    for check in checks:
        found = week.get(check.id)
        if found is None:
            continue
        row = found
        services.append(
            ServiceWeek(
                name=check.name,
                group=check.group_name,
                probes=row.probes,
                uptime=row.up / row.probes if row.probes else None,
                error_rate=row.down / row.probes if row.probes else None,
                p50_ms=row.p50,
                p95_ms=row.p95,
                p99_ms=row.p99,
                hourly=hourly.get(check.id, []),
            )
        )
    return services


_DAILY_ERRORS = text(
    """
    SELECT check_id, date_trunc('day', slot, 'UTC')::date AS day,
           count(*) FILTER (WHERE status = 'down')::float
               / nullif(count(*) FILTER (WHERE status IN ('up', 'down')), 0) AS rate
    FROM outcomes WHERE slot > :since AND slot <= :until
    GROUP BY check_id, day ORDER BY day
    """
)


def collect(
    session: Session, config: EventopsConfig, since: datetime, until: datetime
) -> WeeklyData:
    """Everything the report shows for the period (since, until]."""
    checks = list(session.scalars(select(Check).order_by(Check.name)))
    services = _services_from_rollups(session, checks, since, until)
    source = "rollups"
    if services is None:
        services, source = _services_from_raw(session, checks, since, until), "raw outcomes"
    by_id = {c.id: c.name for c in checks}
    daily: dict[str, list[tuple[date, float]]] = {}
    for row in session.execute(_DAILY_ERRORS, {"since": since, "until": until}):
        if row.rate is not None:
            daily.setdefault(by_id[row.check_id], []).append((row.day, row.rate))
    for service in services:
        service.daily_error_rate = daily.get(service.name, [])

    incidents = [
        IncidentRow(i.id, i.title, i.severity, i.category, i.status, i.opened_at, i.resolved_at)
        for i in session.scalars(
            select(Incident)
            .where(Incident.opened_at > since, Incident.opened_at <= until)
            .order_by(Incident.opened_at)
        )
    ]
    notes: list[str] = []
    vitals = None
    p75_by_page = _optional("core.insight.vitals", "p75_by_page")
    if p75_by_page is not None:
        try:
            vitals = list(p75_by_page(session, since, until))
        except Exception as error:  # their schema may be mid-migration: say so, go on
            notes.append(f"Web Vitals unavailable: {type(error).__name__}")
    kpis = None
    latest_kpis = _optional("core.insight.kpis", "latest_kpis")
    if latest_kpis is not None:
        try:
            kpis = list(latest_kpis(session))
        except Exception as error:
            notes.append(f"KPIs unavailable: {type(error).__name__}")
    patterns = list(
        session.scalars(
            select(ErrorPattern)
            .where(
                ErrorPattern.last_seen > since,
                ErrorPattern.classification.in_(("new", "regressed")),
            )
            .order_by(ErrorPattern.occurrences.desc())
            .limit(10)
        )
    )
    # Patterns first seen long before but new again this week are "regressed"; a new one
    # must have been first seen inside the week.
    patterns = [
        p for p in patterns if p.classification == "regressed" or (since < p.first_seen <= until)
    ]
    return WeeklyData(
        since=since,
        until=until,
        services=services,
        incidents=incidents,
        vitals=vitals,
        kpis=kpis,
        forecasts=forecasts(session, config.capacity, until),
        scaling=scaling_advice(session, config.capacity, until),
        error_patterns=patterns,
        source=source,
        notes=notes,
    )
