"""Capacity planning: measure growth, forecast it two ways, and warn before a limit is hit.

A daily snapshot measures the platform database (users, requests per day and any other
configured query, rows and bytes per table, database size), the storage directories, and the
monthly infrastructure cost those figures imply at the configured unit costs, into
`capacity_samples`.

Each figure is forecast from its daily history (the last sample of each UTC day) with two
models: a least-squares line, and Holt's double exponential smoothing (level and trend,
smoothing constants chosen by grid search on one-step-ahead error). The newest
`capacity.holdout` share of the days is held out; each model, fitted on the rest, forecasts
them, and the one with the smaller root-mean-square error wins (a tie goes to the line, the
simpler model). The winner, refitted on all the days, gives the days until each configured
limit; a limit closer than `warn_within_days` (30) opens a warning incident
`capacity:<metric>:<subject>`, which resolves when the forecast moves out again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.backups.tools import Conn
from core.clock import utcnow
from core.incidents import Problem, raise_problem, resolve_problem
from core.metrics import record_metrics
from models.config import EventopsConfig
from models.config_reports import CapacityConfig
from models.logs import CapacitySample
from models.tables import Metric

GB = 1000**3
MIN_POINTS = 2
MIN_POINTS_FOR_HOLDOUT = 6
_GRID = [round(0.05 * n, 2) for n in range(1, 20)]


# --- measuring ---------------------------------------------------------------------------


@dataclass
class Snapshot:
    samples: list[tuple[str, str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def value(self, metric: str, subject: str = "platform") -> float | None:
        for name, who, value in self.samples:
            if (name, who) == (metric, subject):
                return value
        return None


def directory_bytes(path: Path) -> int:
    """Total size of the regular files under a directory (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size
    return total


_TABLES = """
SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public' AND NOT c.relispartition
ORDER BY c.relname
"""


STATEMENT_TIMEOUT_MS = 60_000


def measure(platform: Conn, config: CapacityConfig, storage_paths: Sequence[Path]) -> Snapshot:
    """Read every figure; a query that fails is reported and the others still count."""
    snapshot = Snapshot()
    with platform.connect() as db:
        # Every statement read-only and bounded in time, as the insight queries are: a
        # capacity query can neither change the platform nor run all night.
        db.execute("SET default_transaction_read_only = on")
        db.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        for name, query in config.queries.items():
            try:
                row = db.execute(query).fetchone()
                if row is None or row[0] is None:
                    raise ValueError("returned no value")
                snapshot.samples.append((name, "platform", float(row[0])))
            except Exception as error:
                snapshot.errors.append(f"capacity.queries.{name}: {error}".splitlines()[0])
        size = db.execute("SELECT pg_database_size(current_database())").fetchone()
        assert size is not None
        snapshot.samples.append(("database_bytes", "platform", float(size[0])))
        wanted = set(config.tables)
        for table, estimate, table_bytes in db.execute(_TABLES).fetchall():
            if wanted and table not in wanted:
                continue
            rows = estimate
            if rows is None or rows < 0:
                # Never analysed (reltuples -1): count it, once, exactly.
                counted = db.execute(f'SELECT count(*) FROM "{table}"').fetchone()
                rows = counted[0] if counted else 0
            snapshot.samples.append(("table_rows", table, float(rows)))
            snapshot.samples.append(("table_bytes", table, float(table_bytes)))
    storage = sum(directory_bytes(path) for path in storage_paths if path.exists())
    snapshot.samples.append(("storage_bytes", "platform", float(storage)))
    for subject, cost in monthly_costs(snapshot, config).items():
        snapshot.samples.append(("monthly_cost", subject, cost))
    return snapshot


def monthly_costs(snapshot: Snapshot, config: CapacityConfig) -> dict[str, float]:
    """The month's infrastructure cost at the configured unit costs, by part and in total."""
    costs = config.costs
    requests_per_day = snapshot.value("requests_per_day") or 0.0
    parts = {
        "database": (snapshot.value("database_bytes") or 0.0) / GB * costs.database_per_gb_month,
        "storage": (snapshot.value("storage_bytes") or 0.0) / GB * costs.storage_per_gb_month,
        "requests": requests_per_day * 30 / 1e6 * costs.per_million_requests,
        "workers": config.workers * costs.per_worker_month,
        "base": costs.base_month,
    }
    parts = {name: round(value, 4) for name, value in parts.items()}
    parts["platform"] = round(sum(parts.values()), 4)
    return parts


def record_samples(
    session: Session, samples: Sequence[tuple[str, str, float]], at: datetime
) -> int:
    rows = [{"metric": m, "subject": s, "value": v, "at": at} for m, s, v in samples]
    if rows:
        session.execute(
            insert(CapacitySample).on_conflict_do_nothing(constraint="uq_capacity_samples_point"),
            rows,
        )
    return len(rows)


def take_snapshot(
    session: Session,
    platform: Conn,
    config: CapacityConfig,
    storage_paths: Sequence[Path],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Measure and store one sample of every figure; returns a small summary."""
    now = now or utcnow()
    snapshot = measure(platform, config, storage_paths)
    stored = record_samples(session, snapshot.samples, now)
    figures = {
        name: snapshot.value(name)
        for name in (*config.queries, "database_bytes", "storage_bytes")
        if snapshot.value(name) is not None
    }
    figures["monthly_cost"] = snapshot.value("monthly_cost")
    return {
        "samples": stored,
        "figures": figures,
        **({"errors": snapshot.errors} if snapshot.errors else {}),
    }


# --- forecasting -------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    slope: float
    intercept: float

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Line:
    """Ordinary least squares; one point, or all at the same x, gives a flat line."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return Line(0.0, mean_y)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return Line(slope, mean_y - slope * mean_x)


@dataclass(frozen=True)
class Holt:
    level: float
    trend: float
    alpha: float
    beta: float
    sse: float

    def ahead(self, steps: float) -> float:
        return self.level + steps * self.trend


def _holt_run(ys: Sequence[float], alpha: float, beta: float) -> Holt:
    level, trend = ys[0], ys[1] - ys[0]
    sse = 0.0
    for y in ys[1:]:
        predicted = level + trend
        sse += (y - predicted) ** 2
        new_level = alpha * y + (1 - alpha) * (level + trend)
        trend = beta * (new_level - level) + (1 - beta) * trend
        level = new_level
    return Holt(level, trend, alpha, beta, sse)


def fit_holt(ys: Sequence[float]) -> Holt:
    """Holt's linear method on equally spaced values, constants by least one-step SSE."""
    if len(ys) < 2:
        return Holt(ys[0], 0.0, 1.0, 0.0, 0.0)
    best: Holt | None = None
    for alpha in _GRID:
        for beta in _GRID:
            fitted = _holt_run(ys, alpha, beta)
            if best is None or fitted.sse < best.sse - 1e-12:
                best = fitted
    assert best is not None
    return best


def _rmse(errors: Sequence[float]) -> float:
    return math.sqrt(sum(e * e for e in errors) / len(errors))


@dataclass
class Forecast:
    metric: str
    subject: str
    points: int
    current: float | None
    model: str | None = None  # linear | holt, the better on the holdout
    linear_rmse: float | None = None
    holt_rmse: float | None = None
    slope_per_day: float | None = None
    in_30_days: float | None = None
    limit: float | None = None
    days_to_limit: float | None = None
    reaches_on: str | None = None
    history: list[tuple[str, float]] = field(default_factory=list)
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("history")
        return data

    @property
    def why(self) -> str:
        """One sentence on which model won and by how much."""
        if self.model is None:
            return self.note or "not enough history"
        if self.linear_rmse is None or self.holt_rmse is None:
            return f"{self.model} (too little history to compare models)"
        errors = f"holdout RMSE linear {self.linear_rmse:.4g}, Holt {self.holt_rmse:.4g}"
        if self.model == "linear" and self.holt_rmse <= self.linear_rmse:
            return f"linear and Holt fit equally well, linear chosen as the simpler ({errors})"
        name = "Holt" if self.model == "holt" else "linear"
        return f"{name} fits better ({errors})"


def daily_series(
    session: Session, metric: str, subject: str, since: datetime
) -> list[tuple[date, float]]:
    """The last sample of each UTC day since `since`, oldest first."""
    rows = session.execute(
        select(CapacitySample.at, CapacitySample.value)
        .where(
            CapacitySample.metric == metric,
            CapacitySample.subject == subject,
            CapacitySample.at >= since,
        )
        .order_by(CapacitySample.at)
    ).all()
    by_day: dict[date, float] = {}
    for at, value in rows:
        by_day[at.astimezone(UTC).date()] = value
    return sorted(by_day.items())


def forecast_series(
    series: Sequence[tuple[date, float]],
    holdout: float,
    limit: float | None = None,
    metric: str = "",
    subject: str = "platform",
) -> Forecast:
    """Fit both models, choose by holdout error, and project to the limit."""
    result = Forecast(
        metric=metric,
        subject=subject,
        points=len(series),
        current=series[-1][1] if series else None,
        limit=limit,
        history=[(day.isoformat(), value) for day, value in series],
    )
    if len(series) < MIN_POINTS:
        result.note = f"{len(series)} day(s) of history; forecasts need {MIN_POINTS}"
        return result
    start = series[0][0]
    xs = [float((day - start).days) for day, _ in series]
    ys = [value for _, value in series]
    model = "linear"
    if len(series) >= MIN_POINTS_FOR_HOLDOUT:
        held = max(1, round(len(series) * holdout))
        train_x, train_y = xs[:-held], ys[:-held]
        line = fit_line(train_x, train_y)
        holt = fit_holt(train_y)
        # Days are not always contiguous: Holt steps are days since the last training day.
        step = _mean_step(train_x)
        result.linear_rmse = _rmse(
            [line.at(x) - y for x, y in zip(xs[-held:], ys[-held:], strict=True)]
        )
        result.holt_rmse = _rmse(
            [
                holt.ahead((x - train_x[-1]) / step) - y
                for x, y in zip(xs[-held:], ys[-held:], strict=True)
            ]
        )
        if result.holt_rmse < result.linear_rmse - 1e-9 * max(1.0, abs(result.linear_rmse)):
            model = "holt"
    result.model = model
    last_x, current = xs[-1], ys[-1]
    if model == "linear":
        line = fit_line(xs, ys)
        slope = line.slope
        fitted_now = line.at(last_x)
    else:
        holt = fit_holt(ys)
        step = _mean_step(xs)
        slope = holt.trend / step
        fitted_now = holt.level
    result.slope_per_day = slope
    result.in_30_days = fitted_now + 30 * slope
    if limit is not None:
        if current >= limit:
            result.days_to_limit = 0.0
        elif slope > 0:
            result.days_to_limit = max(0.0, (limit - fitted_now) / slope)
        if result.days_to_limit is not None:
            reaches = series[-1][0] + timedelta(days=math.ceil(result.days_to_limit))
            result.reaches_on = reaches.isoformat()
    return result


def _mean_step(xs: Sequence[float]) -> float:
    return (xs[-1] - xs[0]) / (len(xs) - 1) if len(xs) > 1 and xs[-1] > xs[0] else 1.0


def tracked_series(session: Session, since: datetime) -> list[tuple[str, str]]:
    """Every (metric, subject) with a sample since `since`."""
    return [
        (metric, subject)
        for metric, subject in session.execute(
            select(CapacitySample.metric, CapacitySample.subject)
            .where(CapacitySample.at >= since)
            .distinct()
            .order_by(CapacitySample.metric, CapacitySample.subject)
        ).all()
    ]


def forecasts(
    session: Session, config: CapacityConfig, now: datetime | None = None
) -> list[Forecast]:
    """A forecast for each configured limit, then for the platform-wide figures."""
    now = now or utcnow()
    since = now - config.history
    results: list[Forecast] = []
    done: set[tuple[str, str]] = set()
    for limit in config.limits:
        series = daily_series(session, limit.metric, limit.subject, since)
        results.append(
            forecast_series(series, config.holdout, limit.limit, limit.metric, limit.subject)
        )
        done.add((limit.metric, limit.subject))
    for metric, subject in tracked_series(session, since):
        if (metric, subject) in done or subject != "platform":
            continue
        series = daily_series(session, metric, subject, since)
        results.append(forecast_series(series, config.holdout, None, metric, subject))
    return results


def problem_fingerprint(metric: str, subject: str) -> str:
    return f"capacity:{metric}:{subject}"


def check_limits(
    session: Session, config: EventopsConfig, now: datetime | None = None
) -> dict[str, Any]:
    """Forecast every limit; open a warning for each less than `warn_within_days` away."""
    now = now or utcnow()
    capacity = config.capacity
    warned, cleared = [], []
    results = forecasts(session, capacity, now)
    figures = []
    for forecast in results:
        if forecast.limit is None:
            continue
        fingerprint = problem_fingerprint(forecast.metric, forecast.subject)
        days = forecast.days_to_limit
        if days is not None:
            figures.append(("capacity_days_to_limit", fingerprint.split(":", 1)[1], days, now))
        if days is not None and days < capacity.warn_within_days:
            description = next(
                (
                    lim.description
                    for lim in capacity.limits
                    if (lim.metric, lim.subject) == (forecast.metric, forecast.subject)
                ),
                None,
            )
            label = forecast.metric + (
                f" ({forecast.subject})" if forecast.subject != "platform" else ""
            )
            problem = Problem(
                fingerprint=fingerprint,
                title=f"{label} reaches its limit {forecast.limit:,.0f} in {days:.0f} days",
                severity="warning",
                summary=f"{label} is {forecast.current:,.0f}, growing {forecast.slope_per_day:,.2f}"
                f"/day; forecast to reach {forecast.limit:,.0f} on {forecast.reaches_on} "
                f"({forecast.why}).",
                labels={
                    "group": "capacity",
                    "metric": forecast.metric,
                    "subject": forecast.subject,
                },
                category="capacity",
                impact=description,
                subject=forecast.subject,
            )
            raise_problem(session, problem, config, now)
            warned.append(fingerprint)
        elif resolve_problem(session, fingerprint, config, now, why="forecast moved out"):
            cleared.append(fingerprint)
    record_metrics(session, figures)
    return {
        "forecasts": len(results),
        "warnings": warned,
        "cleared": cleared,
    }


# --- scaling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Advice:
    action: str
    threshold: str
    current: str
    due: bool | None  # None: no data to judge


def _busiest(session: Session, name: str, since: datetime) -> float | None:
    """The highest per-subject (per queue, per host) average of a metric since `since`."""
    averages = session.scalars(
        select(func.avg(Metric.value))
        .where(Metric.name == name, Metric.at >= since)
        .group_by(Metric.subject)
    ).all()
    return max((float(a) for a in averages if a is not None), default=None)


def scaling_advice(
    session: Session, config: CapacityConfig, now: datetime | None = None
) -> list[Advice]:
    """The configured scaling thresholds next to the current figures."""
    now = now or utcnow()
    scaling = config.scaling
    since = now - timedelta(hours=1)
    lag = _busiest(session, scaling.queue_lag_metric, since)
    cpu = _busiest(session, scaling.cpu_metric, since)
    size = session.scalar(
        select(CapacitySample.value)
        .where(CapacitySample.metric == "database_bytes", CapacitySample.subject == "platform")
        .order_by(CapacitySample.at.desc())
        .limit(1)
    )
    plan = scaling.database_plan_bytes
    return [
        Advice(
            "add a worker",
            f"queue lag > {scaling.add_worker_queue_lag_s:g} s",
            "no data" if lag is None else f"{lag:.1f} s",
            None if lag is None else lag > scaling.add_worker_queue_lag_s,
        ),
        Advice(
            "add a worker",
            f"worker CPU > {scaling.add_worker_cpu:.0%}",
            "no data" if cpu is None else f"{cpu:.0%}",
            None if cpu is None else cpu > scaling.add_worker_cpu,
        ),
        Advice(
            "grow the database plan",
            f"database > {scaling.grow_database_at:.0%} of {plan / GB:g} GB",
            "no data" if size is None else f"{size / GB:.2f} GB ({size / plan:.0%})",
            None if size is None else size > scaling.grow_database_at * plan,
        ),
    ]
