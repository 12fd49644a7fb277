"""Outcomes rolled up per minute and per hour: the incremental, idempotent rollup job, and
the reads (rules, dashboard, reviews) that combine rollups with the raw edge of a window.

How it stays correct:
- The minute watermark lags now by `retention.settle_minutes`, so a bucket is rolled once
  its probes are in. Every bucket before the watermark is rolled; a bucket is recomputed
  from its raw rows (INSERT ... ON CONFLICT DO UPDATE), so rolling it twice (a redelivered
  task, two beats) gives the same row.
- An outcome written behind the watermark (handed off while Postgres was down, a missed
  slot written when its lease ran out) is noted in `rollup_dirty` by the pipeline; the next
  run recomputes its minute and its hour.
- Hours are summed from minutes, up to the hour of the minute watermark.
- A read over (since, until] takes whole hours from the hour rollups, whole minutes from
  the minute rollups, and the ragged edges (and anything not rolled yet) from raw
  outcomes, so it equals the raw answer, up to the histogram's bound for percentiles.

Latency percentiles come from a fixed log-scale histogram: bucket i >= 1 holds latencies
in [1.1^(i-1), 1.1^i) ms, bucket 0 those under 1 ms, the last one everything above. A
percentile is the nearest-rank sample's bucket, reported as the bucket's geometric middle
and clamped to the observed min and max: within 5% (sqrt(1.1) - 1 = 4.9%) of the exact
nearest-rank percentile.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.clock import utcnow
from models.config import EventopsConfig
from models.config_retention import OutcomeRetentionConfig
from models.rollups import RollupDirty, RollupProgress
from models.tables import Check

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
RATIO = 1.1
LAST_BUCKET = 126  # 1.1^125 ms is about 150 s, beyond any probe timeout
# The most a single run rolls, so a run fits its time limit after a long outage; the next
# run goes on from the watermark.
MAX_MINUTES_PER_RUN = timedelta(hours=12)
CHUNK = timedelta(hours=2)

Resolution = Literal["minute", "hour"]

# The same bucket index as `latency_bucket`, in SQL.
_BUCKET_SQL = (
    f"CASE WHEN latency_ms < 1 THEN 0 ELSE "
    f"LEAST({LAST_BUCKET}, floor(ln(latency_ms) / ln({RATIO}))::int + 1) END"
)

# One minute bucket per (check, minute) of the raw outcomes `{source}` picks (a time range,
# or the dirty buckets): the rollup row's columns. One pass: group by histogram bucket too,
# then fold those groups into the minute (a minute usually holds one probe per check).
# Rows without a latency fall in some `idx` group with latency_count 0 and stay out of the
# histogram.
_MINUTE_SELECT = f"""
    SELECT g.check_id, g.bucket, sum(up) AS up, sum(down) AS down, sum(missed) AS missed,
           sum(n) AS latency_count, coalesce(sum(total), 0) AS latency_sum,
           min(low) AS latency_min, max(high) AS latency_max,
           coalesce(jsonb_object_agg(idx::text, n) FILTER (WHERE n > 0), '{{{{}}}}'::jsonb)
               AS histogram
    FROM (
        SELECT o.check_id, date_trunc('minute', o.slot, 'UTC') AS bucket,
               {_BUCKET_SQL} AS idx,
               count(*) FILTER (WHERE o.status = 'up') AS up,
               count(*) FILTER (WHERE o.status = 'down') AS down,
               count(*) FILTER (WHERE o.status NOT IN ('up', 'down')) AS missed,
               count(o.latency_ms) AS n, sum(o.latency_ms) AS total,
               min(o.latency_ms) AS low, max(o.latency_ms) AS high
        FROM outcomes o {{source}}
        GROUP BY 1, 2, 3
    ) g
    GROUP BY g.check_id, g.bucket
"""

# Hours summed from the minute rollups `{source}` picks; each hour's histogram is the sum
# of its minutes' histograms.
_HOUR_SELECT = """
    SELECT o.check_id, date_trunc('hour', o.bucket, 'UTC') AS bucket, sum(up) AS up,
           sum(down) AS down, sum(missed) AS missed, sum(latency_count) AS latency_count,
           sum(latency_sum) AS latency_sum, min(latency_min) AS latency_min,
           max(latency_max) AS latency_max,
           (SELECT coalesce(jsonb_object_agg(e.key, e.n), '{{}}'::jsonb)
            FROM (SELECT key, sum(value::int) AS n
                  FROM unnest(array_agg(o.histogram)) AS h(j), jsonb_each_text(h.j)
                  GROUP BY key) e) AS histogram
    FROM outcome_rollups_minute o {source}
    GROUP BY 1, 2
"""

_COLUMNS = (
    "check_id, bucket, up, down, missed, latency_count, latency_sum, latency_min, "
    "latency_max, histogram"
)
_UPSERT = f"""
    INSERT INTO {{table}} ({_COLUMNS})
    {{select}}
    ON CONFLICT (check_id, bucket) DO UPDATE SET
        up = excluded.up, down = excluded.down, missed = excluded.missed,
        latency_count = excluded.latency_count, latency_sum = excluded.latency_sum,
        latency_min = excluded.latency_min, latency_max = excluded.latency_max,
        histogram = excluded.histogram
"""
_RANGE_SOURCE = "WHERE o.{column} >= :start AND o.{column} < :end"
# Dirty buckets are few and scattered: one index probe on (check_id, slot) each.
_DIRTY_SOURCE = (
    "JOIN unnest(CAST(:ids AS int[]), CAST(:buckets AS timestamptz[])) AS d(check_id, bucket) "
    "ON o.check_id = d.check_id AND o.{column} >= d.bucket "
    "AND o.{column} < d.bucket + CAST(:width AS interval)"
)

# One rollup run at a time: a second one (two beats, a redelivery) skips.
_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended('eventops.rollup', 0))")


def latency_bucket(latency_ms: float) -> int:
    """The histogram bucket of a latency (the same as the SQL in the rollup)."""
    if latency_ms < 1:
        return 0
    return min(LAST_BUCKET, math.floor(math.log(latency_ms) / math.log(RATIO)) + 1)


def bucket_middle(index: int) -> float:
    """The value a histogram bucket stands for: its geometric middle."""
    if index <= 0:
        return 0.5
    return float(RATIO ** (index - 0.5))


def floor_minute(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(at: datetime) -> datetime:
    floor = floor_hour(at)
    return floor if floor == at else floor + HOUR


@dataclass
class Figures:
    """A check's outcomes over some range, aggregated: what any window metric needs."""

    up: int = 0
    down: int = 0
    missed: int = 0
    latency_count: int = 0
    latency_sum: float = 0.0
    latency_min: float | None = None
    latency_max: float | None = None
    histogram: Counter[int] = field(default_factory=Counter)

    def add(
        self,
        up: int,
        down: int,
        missed: int,
        latency_count: int,
        latency_sum: float,
        latency_min: float | None,
        latency_max: float | None,
        histogram: dict[Any, Any] | None = None,
    ) -> None:
        self.up += int(up)
        self.down += int(down)
        self.missed += int(missed)
        self.latency_count += int(latency_count)
        self.latency_sum += float(latency_sum or 0.0)
        if latency_min is not None:
            self.latency_min = (
                latency_min if self.latency_min is None else min(self.latency_min, latency_min)
            )
        if latency_max is not None:
            self.latency_max = (
                latency_max if self.latency_max is None else max(self.latency_max, latency_max)
            )
        for key, count in (histogram or {}).items():
            self.histogram[int(key)] += int(count)

    @property
    def probes(self) -> int:
        """Probes that ran (up or down); missed slots count for neither rate."""
        return self.up + self.down

    @property
    def uptime(self) -> float | None:
        return self.up / self.probes if self.probes else None

    @property
    def error_rate(self) -> float | None:
        return self.down / self.probes if self.probes else None

    @property
    def latency_avg(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile from the histogram, within 5% of the exact one."""
        total = sum(self.histogram.values())
        if not total:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for index in sorted(self.histogram):
            seen += self.histogram[index]
            if seen >= rank:
                value = bucket_middle(index)
                if self.latency_min is not None:
                    value = max(value, self.latency_min)
                if self.latency_max is not None:
                    value = min(value, self.latency_max)
                return value
        return self.latency_max  # pragma: no cover - the loop always reaches the rank

    def to_json(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "down": self.down,
            "missed": self.missed,
            "uptime": self.uptime,
            "avg_ms": self.latency_avg,
            "min_ms": self.latency_min,
            "max_ms": self.latency_max,
            "p50_ms": self.percentile(0.5),
            "p95_ms": self.percentile(0.95),
            "p99_ms": self.percentile(0.99),
        }


# ---------------------------------------------------------------------------- the job


def watermarks(session: Session) -> dict[str, datetime]:
    """{"minute": ..., "hour": ...}: buckets before each are rolled up (absent: none yet)."""
    return {
        row.resolution: row.watermark
        for row in session.execute(select(RollupProgress.resolution, RollupProgress.watermark))
    }


def _set_watermark(session: Session, resolution: str, at: datetime, now: datetime) -> None:
    session.execute(
        insert(RollupProgress)
        .values(resolution=resolution, watermark=at, updated_at=now)
        .on_conflict_do_update(
            index_elements=["resolution"], set_={"watermark": at, "updated_at": now}
        )
    )


def _roll(
    session: Session,
    resolution: Resolution,
    start: datetime,
    end: datetime,
    pairs: Sequence[tuple[int, datetime]] = (),
) -> int:
    """Recompute the rollup rows of [start, end), or of the (check id, bucket) `pairs` when
    given. Returns rows written."""
    table = f"outcome_rollups_{resolution}"
    template = _MINUTE_SELECT if resolution == "minute" else _HOUR_SELECT
    column = "slot" if resolution == "minute" else "bucket"
    params: dict[str, Any] = {"start": start, "end": end}
    source = _RANGE_SOURCE.format(column=column)
    if pairs:
        source = _DIRTY_SOURCE.format(column=column)
        params = {
            "ids": [p[0] for p in pairs],
            "buckets": [p[1] for p in pairs],
            "width": MINUTE if resolution == "minute" else HOUR,
        }
    sql = _UPSERT.format(table=table, select=template.format(source=source))
    result = session.execute(text(sql), params)
    return int(getattr(result, "rowcount", 0) or 0)


def queue_rerolls(session: Session, keys: Iterable[tuple[int, datetime]]) -> int:
    """Queue the minutes of these (check id, slot) pairs for a re-roll (idempotent)."""
    minutes = sorted({(check_id, floor_minute(slot)) for check_id, slot in keys})
    if minutes:
        session.execute(
            insert(RollupDirty)
            .values([{"check_id": c, "bucket": b} for c, b in minutes])
            .on_conflict_do_nothing()
        )
    return len(minutes)


def note_late_outcomes(
    session: Session,
    keys: Iterable[tuple[int, datetime]],
    config: EventopsConfig,
    now: datetime,
) -> int:
    """Called by the pipeline with the (check id, slot) of the outcomes it wrote: those whose
    minute may already be rolled up are queued in `rollup_dirty` for a re-roll.

    The test is cheap and needs no query: a minute can only be behind the watermark when
    it ends more than the settle delay before now; one minute of slack covers a rollup
    run on a clock slightly ahead of this one. Writes nothing in the normal case."""
    settle = timedelta(minutes=config.retention.settle_minutes)
    cutoff = floor_minute(now - settle) + MINUTE
    return queue_rerolls(session, [(c, slot) for c, slot in keys if slot < cutoff])


def run_rollup(
    session: Session, retention: OutcomeRetentionConfig, now: datetime | None = None
) -> dict[str, Any]:
    """Roll minutes up to now minus the settle delay, re-roll dirty minutes, then roll
    hours up to the minute watermark's hour. Idempotent; in the caller's transaction.

    Returns {"minutes": rows, "hours": rows, "rerolled": dirty buckets, "minute_watermark",
    "hour_watermark", "lag_s"}; {"busy": true} when another run holds the lock.
    """
    now = now or utcnow()
    if not session.scalar(_LOCK):
        return {"busy": True}
    target = floor_minute(now - timedelta(minutes=retention.settle_minutes))
    marks = watermarks(session)
    minute_mark = marks.get("minute")
    if minute_mark is None:
        oldest = session.scalar(text("SELECT min(slot) FROM outcomes"))
        minute_mark = min(floor_minute(oldest), target) if oldest is not None else target
    summary: dict[str, Any] = {"minutes": 0, "hours": 0, "rerolled": 0, "too_late": 0}

    stop = min(target, minute_mark + MAX_MINUTES_PER_RUN)
    while minute_mark < stop:
        chunk_end = min(stop, minute_mark + CHUNK)
        summary["minutes"] += _roll(session, "minute", minute_mark, chunk_end)
        minute_mark = chunk_end
    _set_watermark(session, "minute", minute_mark, now)

    # A late outcome whose day's partition is already dropped cannot be re-rolled: the rest
    # of its minute is gone, and a recompute would shrink the rollup to that one outcome. It
    # stays out of the rollups (its row, in the default partition, goes with the old rows).
    raw_cutoff = datetime.combine(
        (now - timedelta(days=retention.raw_outcomes_days)).astimezone(UTC).date(),
        datetime.min.time(),
        UTC,
    )
    too_late = session.execute(
        text(
            "DELETE FROM rollup_dirty WHERE bucket < :cutoff AND to_regclass("
            "'outcomes_p' || to_char(bucket AT TIME ZONE 'UTC', 'YYYYMMDD')) IS NULL"
        ),
        {"cutoff": raw_cutoff},
    )
    summary["too_late"] = int(getattr(too_late, "rowcount", 0) or 0)
    # Late outcomes: recompute their minutes (behind the watermark) and then their hours.
    dirty = session.execute(
        text("DELETE FROM rollup_dirty WHERE bucket < :mark RETURNING check_id, bucket"),
        {"mark": minute_mark},
    ).all()
    dirty_hours: set[tuple[int, datetime]] = set()
    if dirty:
        pairs = [(row.check_id, row.bucket) for row in dirty]
        lo = min(b for _, b in pairs)
        hi = max(b for _, b in pairs) + MINUTE
        _roll(session, "minute", lo, hi, pairs)
        summary["rerolled"] = len(pairs)
        dirty_hours = {(c, floor_hour(b)) for c, b in pairs}

    hour_target = floor_hour(minute_mark)
    hour_mark = marks.get("hour")
    if hour_mark is None:
        first_minute = session.scalar(text("SELECT min(bucket) FROM outcome_rollups_minute"))
        hour_mark = (
            min(floor_hour(first_minute), hour_target) if first_minute is not None else hour_target
        )
    if hour_mark < hour_target:
        summary["hours"] += _roll(session, "hour", hour_mark, hour_target)
        hour_mark = hour_target
    _set_watermark(session, "hour", hour_mark, now)
    rerolled_hours = sorted(p for p in dirty_hours if p[1] < hour_mark)
    if rerolled_hours:
        lo = min(b for _, b in rerolled_hours)
        hi = max(b for _, b in rerolled_hours) + HOUR
        _roll(session, "hour", lo, hi, rerolled_hours)

    summary["minute_watermark"] = minute_mark.isoformat()
    summary["hour_watermark"] = hour_mark.isoformat()
    summary["lag_s"] = (now - minute_mark).total_seconds()
    return summary


# ---------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class Plan:
    """Which source covers which part of a window (since, until]."""

    raw: tuple[tuple[datetime, datetime, bool], ...]  # (lo, hi, lo_inclusive), hi inclusive
    minute: tuple[tuple[datetime, datetime], ...]  # [lo, hi)
    hour: tuple[tuple[datetime, datetime], ...]  # [lo, hi)


def plan_window(
    since: datetime, until: datetime, marks: dict[str, datetime], use_hours: bool = True
) -> Plan:
    """Split (since, until] into whole hours and whole minutes already rolled up and the raw
    rest. A minute bucket b holds slots in [b, b + 1m): it is inside the window when
    b > since and every slot before b + 1m is <= until."""
    minute_mark = marks.get("minute")
    if minute_mark is None or until <= since:
        return Plan(((since, until, False),), (), ())
    m_lo = floor_minute(since) + MINUTE
    # b + 1m <= until + 1us: a bucket ending right after `until` (a window given as
    # (start - 1us, end - 1us]) is still whole.
    m_hi = min(minute_mark, floor_minute(until + timedelta(microseconds=1)))
    if m_hi <= m_lo:
        return Plan(((since, until, False),), (), ())
    # Raw for (since, m_lo) and [m_hi, until]; the first range's hi is exclusive, which
    # the half-open check below expresses by moving it back one microsecond.
    raw: list[tuple[datetime, datetime, bool]] = [
        (since, m_lo - timedelta(microseconds=1), False),
        (m_hi, until, True),
    ]
    hour_mark = marks.get("hour")
    h_lo = ceil_hour(m_lo)
    h_hi = min(hour_mark, floor_hour(m_hi)) if hour_mark is not None else h_lo
    if use_hours and h_lo < h_hi:
        minute = tuple(r for r in ((m_lo, h_lo), (h_hi, m_hi)) if r[0] < r[1])
        return Plan(tuple(raw), minute, ((h_lo, h_hi),))
    return Plan(tuple(raw), ((m_lo, m_hi),), ())


def window_figures(
    session: Session,
    check_ids: Sequence[int] | None,
    since: datetime,
    until: datetime,
    *,
    use_hours: bool = True,
    histograms: bool = True,
) -> dict[int, Figures]:
    """Per check, its outcomes with slot in (since, until], from hour and minute rollups where
    they cover whole buckets and raw outcomes for the rest. Checks without outcomes are
    absent."""
    plan = plan_window(since, until, watermarks(session), use_hours)
    figures: dict[int, Figures] = {}

    def add(check_id: int, row: Any, histogram: dict[Any, Any] | None = None) -> None:
        figures.setdefault(check_id, Figures()).add(
            row.up,
            row.down,
            row.missed,
            row.latency_count,
            row.latency_sum,
            row.latency_min,
            row.latency_max,
            histogram,
        )

    id_filter = " AND check_id = ANY(:ids)" if check_ids is not None else ""
    params_ids: dict[str, Any] = {"ids": list(check_ids)} if check_ids is not None else {}
    for lo, hi, lo_inclusive in plan.raw:
        if hi < lo:
            continue
        rows = session.execute(
            text(
                f"""
                SELECT check_id, idx,
                       count(*) FILTER (WHERE status = 'up') AS up,
                       count(*) FILTER (WHERE status = 'down') AS down,
                       count(*) FILTER (WHERE status NOT IN ('up', 'down')) AS missed,
                       count(latency_ms) AS latency_count,
                       coalesce(sum(latency_ms), 0) AS latency_sum,
                       min(latency_ms) AS latency_min, max(latency_ms) AS latency_max
                FROM (SELECT *, {_BUCKET_SQL} AS idx FROM outcomes
                      WHERE slot {">=" if lo_inclusive else ">"} :lo AND slot <= :hi
                      {id_filter}) o
                GROUP BY check_id, idx
                """
            ),
            {"lo": lo, "hi": hi, **params_ids},
        )
        for row in rows:
            histogram = {row.idx: row.latency_count} if row.latency_count else None
            add(row.check_id, row, histogram)
    for resolution, ranges in (("minute", plan.minute), ("hour", plan.hour)):
        for lo, hi in ranges:
            rows = session.execute(
                text(
                    f"""
                    SELECT check_id, sum(up) AS up, sum(down) AS down, sum(missed) AS missed,
                           sum(latency_count) AS latency_count,
                           sum(latency_sum) AS latency_sum, min(latency_min) AS latency_min,
                           max(latency_max) AS latency_max
                    FROM outcome_rollups_{resolution}
                    WHERE bucket >= :lo AND bucket < :hi {id_filter}
                    GROUP BY check_id
                    """
                ),
                {"lo": lo, "hi": hi, **params_ids},
            )
            for row in rows:
                add(row.check_id, row)
            if not histograms:
                continue
            for row in session.execute(
                text(
                    f"""
                    SELECT check_id, e.key, sum(e.value::int) AS n
                    FROM outcome_rollups_{resolution}, jsonb_each_text(histogram) AS e
                    WHERE bucket >= :lo AND bucket < :hi {id_filter}
                    GROUP BY check_id, e.key
                    """
                ),
                {"lo": lo, "hi": hi, **params_ids},
            ):
                figures.setdefault(row.check_id, Figures()).histogram[int(row.key)] += int(row.n)
    return figures


def uptime(
    session: Session, check_ids: Sequence[int] | None, since: datetime, until: datetime
) -> dict[int, float]:
    """Per check, the fraction of its probes in (since, until] that were up (checks with no
    probe in the window are absent). Missed slots count for neither side."""
    figures = window_figures(session, check_ids, since, until, histograms=False)
    return {cid: f.uptime for cid, f in figures.items() if f.uptime is not None}


def series(
    session: Session,
    check_id: int,
    since: datetime,
    until: datetime,
    resolution: Resolution = "minute",
) -> list[dict[str, Any]]:
    """One check's outcomes per minute or per hour from `since` (floored to the bucket) to
    `until`, oldest first, for charts: each point is {"bucket", "up", "down", "missed",
    "uptime", "avg_ms", "min_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms"}. Buckets without
    outcomes are absent. Buckets not rolled up yet are computed from raw outcomes, so the
    series reaches `until`."""
    if resolution not in ("minute", "hour"):
        raise ValueError(f"resolution: must be 'minute' or 'hour', not {resolution!r}")
    marks = watermarks(session)
    start = floor_minute(since) if resolution == "minute" else floor_hour(since)
    points: dict[datetime, Figures] = {}

    def take(rows: Iterable[Any], bucket_of: Any = None) -> None:
        for row in rows:
            bucket = row.bucket if bucket_of is None else bucket_of(row.bucket)
            points.setdefault(bucket, Figures()).add(
                row.up,
                row.down,
                row.missed,
                row.latency_count,
                row.latency_sum,
                row.latency_min,
                row.latency_max,
                row.histogram,
            )

    def stored(table: str, lo: datetime, hi: datetime) -> Any:
        return session.execute(
            text(
                f"SELECT {_COLUMNS} FROM {table} "
                "WHERE check_id = :id AND bucket >= :lo AND bucket < :hi ORDER BY bucket"
            ),
            {"id": check_id, "lo": lo, "hi": hi},
        )

    minute_mark = marks.get("minute", start)
    minute_mark = max(minute_mark, start)
    if resolution == "hour":
        hour_mark = max(min(marks.get("hour", start), until), start)
        take(stored("outcome_rollups_hour", start, hour_mark))
        minute_from = hour_mark
    else:
        minute_from = start
    to_hour = floor_hour if resolution == "hour" else None
    if minute_from < minute_mark:
        take(stored("outcome_rollups_minute", minute_from, min(minute_mark, until)), to_hour)
    raw_from = max(minute_from, minute_mark)
    if raw_from <= until:
        live = _MINUTE_SELECT.format(
            source=_RANGE_SOURCE.format(column="slot") + " AND o.check_id = :id"
        )
        take(
            session.execute(
                text(live),
                {"start": raw_from, "end": until + timedelta(microseconds=1), "id": check_id},
            ),
            to_hour,
        )
    return [{"bucket": b.isoformat(), **points[b].to_json()} for b in sorted(points)]


def latest_status_and_uptime(
    session: Session,
    check_ids: Sequence[int] | None,
    now: datetime | None = None,
    window: timedelta = timedelta(hours=24),
) -> dict[int, dict[str, Any]]:
    """For the dashboard's status board: per check (all when `check_ids` is None) its current
    status and last probe, with uptime, probe count, average and p95 latency over
    (now - window, now]."""
    now = now or utcnow()
    query = select(
        Check.id,
        Check.name,
        Check.status,
        Check.enabled,
        Check.last_checked_at,
        Check.last_latency_ms,
        Check.last_reason,
    ).order_by(Check.name)
    if check_ids is not None:
        query = query.where(Check.id.in_(list(check_ids)))
    checks = session.execute(query).all()
    figures = window_figures(session, [c.id for c in checks], now - window, now)
    board: dict[int, dict[str, Any]] = {}
    for check in checks:
        f = figures.get(check.id, Figures())
        board[check.id] = {
            "name": check.name,
            "status": check.status,
            "enabled": check.enabled,
            "last_checked_at": check.last_checked_at,
            "last_latency_ms": check.last_latency_ms,
            "last_reason": check.last_reason,
            "uptime": f.uptime,
            "probes": f.probes,
            "down": f.down,
            "avg_ms": f.latency_avg,
            "p95_ms": f.percentile(0.95),
        }
    return board
