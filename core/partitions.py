"""Daily partitions of `outcomes`: created ahead, dropped past retention once rolled up, and
the rollups' own retention.

- Partitions are named `outcomes_pYYYYMMDD` and hold slots in [that UTC day, the next).
  `outcomes_default` takes any slot outside them, so the pipeline's insert never fails for
  want of a partition. Creating a day's partition moves that day's rows out of the default
  one first (Postgres refuses to create a partition whose range the default already holds).
- A partition is dropped when its whole day is older than `raw_outcomes_days` and every
  minute of it is rolled up (before the minute watermark, no late outcome waiting in
  `rollup_dirty`); otherwise it waits for the next run. Old rows in the default partition
  go the same way, by DELETE.
- Minute rollups older than `minute_rollups_days` go once their hours are rolled; hour
  rollups older than `hour_rollups_days` go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.metrics import record_metrics
from core.rollups import watermarks
from models.config_retention import OutcomeRetentionConfig

PARENT = "outcomes"
DEFAULT = "outcomes_default"
_NAME = re.compile(r"^outcomes_p(\d{8})$")
METRIC_SUBJECT = "outcomes"

# One maintenance run at a time; the rollup takes its own lock, and dropping a partition
# waits for the rollup's transaction (it reads the partition) rather than racing it.
_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended('eventops.partitions', 0))")


@dataclass(frozen=True)
class Partition:
    name: str
    day: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.day, time(), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=1)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def partition_name(day: date) -> str:
    return f"outcomes_p{day:%Y%m%d}"


def partitions(session: Session) -> list[Partition]:
    """The daily partitions attached to `outcomes`, oldest first (the default one aside)."""
    names = session.scalars(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    ).all()
    found = []
    for name in names:
        if match := _NAME.match(name):
            found.append(Partition(name, datetime.strptime(match.group(1), "%Y%m%d").date()))
    return sorted(found, key=lambda p: p.day)


def _ensure_default(session: Session) -> None:
    session.execute(text(f"CREATE TABLE IF NOT EXISTS {DEFAULT} PARTITION OF {PARENT} DEFAULT"))


def create_partition(session: Session, day: date) -> int:
    """Create the day's partition; returns how many rows it took over from the default one.

    Always a new table that is then attached, never CREATE TABLE ... PARTITION OF: attaching
    takes only a SHARE UPDATE EXCLUSIVE lock on `outcomes`, so the pipeline's inserts go on
    meanwhile (PARTITION OF would take ACCESS EXCLUSIVE). The day's rows that waited in the
    default partition move into the new table first, because attaching checks that the
    default partition no longer holds the range."""
    part = Partition(partition_name(day), day)
    bounds = {"start": part.start, "end": part.end}
    # No insert may land in the default partition between the move and the attach (the
    # attach would fail); inserts routed to the other partitions are not held up.
    session.execute(text(f"LOCK TABLE {DEFAULT} IN EXCLUSIVE MODE"))
    session.execute(text(f"CREATE TABLE {part.name} (LIKE {PARENT} INCLUDING DEFAULTS)"))
    moved = _rowcount(
        session.execute(
            text(
                f"WITH moved AS (DELETE FROM {DEFAULT} WHERE slot >= :start AND slot < :end "
                f"RETURNING *) INSERT INTO {part.name} SELECT * FROM moved"
            ),
            bounds,
        )
    )
    literal = f"FROM ('{part.start:%Y-%m-%d %H:%M:%S}+00') TO ('{part.end:%Y-%m-%d %H:%M:%S}+00')"
    session.execute(text(f"ALTER TABLE {PARENT} ATTACH PARTITION {part.name} FOR VALUES {literal}"))
    return moved


def ensure_partitions(
    session: Session, retention: OutcomeRetentionConfig, now: datetime
) -> dict[str, Any]:
    """Partitions for today and `partitions_ahead_days` ahead, and for any day within raw
    retention whose rows landed in the default partition (they move into it)."""
    _ensure_default(session)
    today = now.astimezone(UTC).date()
    have = {p.day for p in partitions(session)}
    wanted = {today + timedelta(days=n) for n in range(retention.partitions_ahead_days + 1)}
    oldest_kept = today - timedelta(days=retention.raw_outcomes_days)
    stranded_days = session.scalars(
        text(
            f"SELECT DISTINCT (slot AT TIME ZONE 'UTC')::date FROM {DEFAULT} "
            "WHERE slot >= :oldest AND slot < :until"
        ),
        {
            "oldest": datetime.combine(oldest_kept, time(), tzinfo=UTC),
            "until": datetime.combine(max(wanted) + timedelta(days=1), time(), tzinfo=UTC),
        },
    ).all()
    wanted.update(stranded_days)
    created: list[str] = []
    moved = 0
    for day in sorted(wanted - have):
        moved += create_partition(session, day)
        created.append(partition_name(day))
    return {"created": created, "moved_from_default": moved}


@dataclass(frozen=True)
class Horizon:
    """What may go: raw rows before `raw_until` (past retention and rolled up), except the
    days in `dirty_days` (a late outcome waits for its re-roll)."""

    cutoff: datetime
    raw_until: datetime
    dirty_days: frozenset[date]
    first_dirty: datetime | None


def horizon(session: Session, retention: OutcomeRetentionConfig, now: datetime) -> Horizon:
    today = now.astimezone(UTC).date()
    cutoff = datetime.combine(today - timedelta(days=retention.raw_outcomes_days), time(), UTC)
    minute_mark = watermarks(session).get("minute")
    rolled_until = minute_mark if minute_mark is not None else datetime.min.replace(tzinfo=UTC)
    dirty = session.execute(
        text(
            "SELECT min(bucket), array_agg(DISTINCT (bucket AT TIME ZONE 'UTC')::date) "
            "FROM rollup_dirty"
        )
    ).one()
    return Horizon(cutoff, min(cutoff, rolled_until), frozenset(dirty[1] or ()), dirty[0])


def trim(session: Session, retention: OutcomeRetentionConfig, now: datetime) -> dict[str, Any]:
    """The row deletes of retention (no DDL, so no lock on `outcomes` itself): old rows of the
    default partition on the same terms as a partition drop, minute rollups past their
    retention whose hours are rolled, hour rollups past theirs."""
    today = now.astimezone(UTC).date()
    edge = horizon(session, retention, now)
    default_until = edge.raw_until
    if edge.first_dirty is not None:
        default_until = min(default_until, edge.first_dirty)
    deleted_default = _rowcount(
        session.execute(
            text(f"DELETE FROM {DEFAULT} WHERE slot < :until"), {"until": default_until}
        )
    )
    hour_mark = watermarks(session).get("hour")
    minute_cutoff = datetime.min.replace(tzinfo=UTC)
    if hour_mark is not None:
        minute_cutoff = min(
            datetime.combine(today - timedelta(days=retention.minute_rollups_days), time(), UTC),
            hour_mark,
        )
    minutes_deleted = _rowcount(
        session.execute(
            text("DELETE FROM outcome_rollups_minute WHERE bucket < :cutoff"),
            {"cutoff": minute_cutoff},
        )
    )
    hour_cutoff = datetime.combine(today - timedelta(days=retention.hour_rollups_days), time(), UTC)
    hours_deleted = _rowcount(
        session.execute(
            text("DELETE FROM outcome_rollups_hour WHERE bucket < :cutoff"), {"cutoff": hour_cutoff}
        )
    )
    return {
        "default_rows_deleted": deleted_default,
        "minute_rollups_deleted": minutes_deleted,
        "hour_rollups_deleted": hours_deleted,
    }


def drop_expired(
    session: Session, retention: OutcomeRetentionConfig, now: datetime
) -> dict[str, Any]:
    """Drop the daily partitions past raw retention whose minutes are all rolled up (before
    the minute watermark, none waiting in `rollup_dirty`); the others wait for a later run."""
    edge = horizon(session, retention, now)
    dropped: list[str] = []
    waiting: list[str] = []
    for part in partitions(session):
        if part.end > edge.cutoff:
            break
        if part.end <= edge.raw_until and part.day not in edge.dirty_days:
            session.execute(text(f"DROP TABLE {part.name}"))
            dropped.append(part.name)
        else:
            waiting.append(part.name)
    return {"dropped": dropped, "waiting_for_rollup": waiting}


def health(session: Session, now: datetime) -> dict[str, float]:
    """The figures the alert rules read, written to the metrics table (subject `outcomes`):

    - `outcome_partitions_ahead_days`: whole days after today with a partition, in a row
      (0 when tomorrow has none; today's own partition missing gives -1).
    - `outcome_default_partition_rows`: rows in the default partition (should be 0 after a
      maintenance run: slots far in the future or a clock gone wrong).
    - `outcome_rollup_lag_s`: now minus the minute watermark (or -1 before the first run).
    """
    today = now.astimezone(UTC).date()
    days = {p.day for p in partitions(session)}
    ahead = -1
    if today in days:
        ahead = 0
        while today + timedelta(days=ahead + 1) in days:
            ahead += 1
    default_rows = session.scalar(text(f"SELECT count(*) FROM {DEFAULT}")) or 0
    minute_mark = watermarks(session).get("minute")
    lag = (now - minute_mark).total_seconds() if minute_mark is not None else -1.0
    return {
        "outcome_partitions_ahead_days": float(ahead),
        "outcome_default_partition_rows": float(default_rows),
        "outcome_rollup_lag_s": float(lag),
    }


def maintain(
    session: Session, retention: OutcomeRetentionConfig, now: datetime | None = None
) -> dict[str, Any]:
    """The hourly job: trim retention, create partitions ahead, drop those past retention,
    record the health figures. Idempotent; {"busy": true} when another run holds the lock."""
    now = now or utcnow()
    if not session.scalar(_LOCK):
        return {"busy": True}
    summary: dict[str, Any] = {}
    summary.update(trim(session, retention, now))
    # The DDL comes last so its lock on `outcomes` is held only until the commit right after,
    # and gives up rather than queue behind a long query with every insert queued behind it
    # (the task retries).
    session.execute(text("SET LOCAL lock_timeout = '2s'"))
    summary.update(ensure_partitions(session, retention, now))
    summary.update(drop_expired(session, retention, now))
    figures = health(session, now)
    record_metrics(session, [(name, METRIC_SUBJECT, value, now) for name, value in figures.items()])
    summary["health"] = figures
    return summary
