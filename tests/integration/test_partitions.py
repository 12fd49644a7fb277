"""Outcome partitions and retention on real Postgres, with an injected clock: partitions are
created ahead, rows that landed in the default partition move into their day, partitions
past retention are dropped only once rolled up, and the rollups stay correct throughout."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from alembic import command
from sqlalchemy import func, make_url, select, text
from sqlalchemy.dialects.postgresql import insert

from core.backups.tools import Conn
from core.migrate import alembic_config
from core.partitions import maintain, partition_name, partitions
from core.pipeline import record_outcomes
from core.probing import ProbeResult
from core.rollups import run_rollup, window_figures
from core.schedule import sync_checks
from models.config_retention import OutcomeRetentionConfig
from models.db import session_scope
from models.rollups import OutcomeRollupHour, OutcomeRollupMinute, RollupDirty
from models.tables import Check, Metric, Outcome
from tests.conftest import make_config

RETENTION = OutcomeRetentionConfig(
    raw_outcomes_days=3,
    minute_rollups_days=5,
    hour_rollups_days=10,
    partitions_ahead_days=2,
    settle_minutes=2,
)


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def checks(at: datetime) -> list[int]:
    config = make_config(
        checks=[
            {"name": name, "url": "http://127.0.0.1:9/", "interval": "5m", "timeout": "5s"}
            for name in ("stripe", "mapbox")
        ]
    )
    with session_scope() as session:
        sync_checks(session, config, now=at)
        return list(session.scalars(select(Check.id).order_by(Check.id)))


def outcomes_every_5m(check_ids: list[int], start: datetime, end: datetime) -> int:
    """Every fifth probe of the first check is down; latencies cycle 20..580 ms."""
    rows: list[dict[str, Any]] = []
    n = 0
    slot = start
    while slot < end:
        for check_id in check_ids:
            down = check_id == check_ids[0] and n % 5 == 0
            rows.append(
                {
                    "check_id": check_id,
                    "slot": slot,
                    "observed_at": slot,
                    "status": "down" if down else "up",
                    "latency_ms": 20.0 + (n % 30) * 20,
                }
            )
        n += 1
        slot += timedelta(minutes=5)
    with session_scope() as session:
        for i in range(0, len(rows), 5000):
            session.execute(insert(Outcome).values(rows[i : i + 5000]))
    return len(rows)


def roll_until_caught_up(now: datetime) -> dict[str, Any]:
    """The minute task, run as often as it takes to catch up after a long gap."""
    for _ in range(50):
        with session_scope() as session:
            summary = run_rollup(session, RETENTION, now=now)
        if summary["minutes"] == 0:
            return summary
    raise AssertionError("the rollup never caught up")


def maintain_at(now: datetime) -> dict[str, Any]:
    with session_scope() as session:
        return maintain(session, RETENTION, now=now)


def days_near(around: date) -> set[date]:
    with session_scope() as session:
        return {p.day for p in partitions(session) if abs((p.day - around).days) <= 30}


def rows_in(table: str) -> int:
    with session_scope() as session:
        return session.scalar(text(f"SELECT count(*) FROM {table}")) or 0


def totals(check_ids: list[int], since: datetime, until: datetime) -> dict[int, tuple[Any, ...]]:
    with session_scope() as session:
        figures = window_figures(session, check_ids, since, until)
    return {
        cid: (f.up, f.down, f.latency_count, round(f.latency_sum, 6), f.latency_max)
        for cid, f in figures.items()
    }


def test_partitions_are_created_ahead_and_dropped_past_retention_while_rollups_stay_correct(
    clean_db: str,
) -> None:
    d0 = date(2027, 3, 1)
    start = midnight(d0)
    summary = maintain_at(start + timedelta(hours=12))
    assert {partition_name(d0 + timedelta(days=n)) for n in range(3)} <= set(summary["created"])
    assert days_near(d0) == {d0 + timedelta(days=n) for n in range(3)}

    check_ids = checks(start)
    written = outcomes_every_5m(check_ids, start, start + timedelta(days=6))
    # Days 3 to 5 have no partition yet: their rows wait in the default partition.
    assert rows_in("outcomes_default") == 3 * 288 * 2
    now = start + timedelta(days=6, minutes=10)
    roll_until_caught_up(now)
    whole = (start - timedelta(microseconds=1), start + timedelta(days=6))
    before = totals(check_ids, *whole)
    assert sum(t[0] + t[1] for t in before.values()) == written
    # Slots in [05:00, 06:00) on day 0, a window of whole hours.
    hour_5 = (
        start + timedelta(hours=5, microseconds=-1),
        start + timedelta(hours=6, microseconds=-1),
    )
    per_hour_before = totals(check_ids, *hour_5)

    summary = maintain_at(now)

    d6 = d0 + timedelta(days=6)
    # Today and two days ahead, plus the days within raw retention that were in default.
    assert days_near(d0) == {d0 + timedelta(days=n) for n in range(3, 9)}
    assert summary["moved_from_default"] == 3 * 288 * 2
    assert {partition_name(d0 + timedelta(days=n)) for n in range(3)} <= set(summary["dropped"])
    assert summary["waiting_for_rollup"] == []
    assert rows_in("outcomes_default") == 0
    with session_scope() as session:
        oldest_raw = session.scalar(select(func.min(Outcome.slot)))
        assert oldest_raw == midnight(d0 + timedelta(days=3))
        # Minutes older than 5 days are gone; their hours remain.
        assert session.scalar(select(func.min(OutcomeRollupMinute.bucket))) == midnight(
            d6 - timedelta(days=5)
        )
        assert session.scalar(select(func.count()).select_from(OutcomeRollupHour)) == 6 * 24 * 2
    # The same figures after the raw outcomes of days 0 to 2 are gone.
    assert totals(check_ids, *whole) == before
    assert totals(check_ids, *hour_5) == per_hour_before
    assert summary["health"] == {
        "outcome_partitions_ahead_days": 2.0,
        "outcome_default_partition_rows": 0.0,
        "outcome_rollup_lag_s": 120.0,
    }
    with session_scope() as session:
        recorded = dict(
            session.execute(
                select(Metric.name, Metric.value).where(Metric.subject == "outcomes")
            ).all()
        )
    assert recorded["outcome_partitions_ahead_days"] == 2.0

    # The same run again changes nothing.
    again = maintain_at(now)
    assert (again["created"], again["dropped"], again["moved_from_default"]) == ([], [], 0)


def test_a_partition_is_kept_until_every_minute_of_it_is_rolled_up(clean_db: str) -> None:
    d0 = date(2027, 5, 1)
    start = midnight(d0)
    maintain_at(start)
    check_ids = checks(start)
    outcomes_every_5m(check_ids, start, start + timedelta(days=3))
    # The rollup has only reached 00:08 on day 1.
    roll_until_caught_up(start + timedelta(days=1, minutes=10))

    summary = maintain_at(start + timedelta(days=10))
    assert partition_name(d0) in summary["dropped"]
    assert summary["waiting_for_rollup"] == [
        partition_name(d0 + timedelta(days=1)),
        partition_name(d0 + timedelta(days=2)),
    ]
    assert rows_in(partition_name(d0 + timedelta(days=1))) == 288 * 2

    # Rolled up now; then a late outcome of day 1 arrives and holds the day back again.
    now = start + timedelta(days=10)
    roll_until_caught_up(now)
    late_slot = start + timedelta(days=1, hours=12, minutes=1)
    with session_scope() as session:
        record_outcomes(
            session,
            [ProbeResult(check_ids[0], late_slot, late_slot, "down", 700.0, 503, "bad_status")],
            make_config(),
            now=now,
        )
    summary = maintain_at(now)
    assert summary["dropped"] == [partition_name(d0 + timedelta(days=2))]
    assert summary["waiting_for_rollup"] == [partition_name(d0 + timedelta(days=1))]

    roll_until_caught_up(now)
    with session_scope() as session:
        assert session.scalars(select(RollupDirty.bucket)).all() == []
        minute = session.get(OutcomeRollupMinute, (check_ids[0], late_slot.replace(second=0)))
        assert minute is not None and minute.down == 1
    assert maintain_at(now)["dropped"] == [partition_name(d0 + timedelta(days=1))]

    # An outcome of day 0, whose partition is gone, comes in now: re-rolling its hour from
    # what is left would shrink it, so it stays out of the rollups and is deleted as old.
    gone = start + timedelta(hours=6, minutes=2, seconds=30)
    with session_scope() as session:
        hour_before = session.get(OutcomeRollupHour, (check_ids[0], start + timedelta(hours=6)))
        assert hour_before is not None
        expected = (hour_before.up, hour_before.down, hour_before.latency_count)
        record_outcomes(
            session,
            [ProbeResult(check_ids[0], gone, gone, "down", 700.0, 503, "bad_status")],
            make_config(),
            now=now,
        )
    with session_scope() as session:
        assert run_rollup(session, RETENTION, now=now)["too_late"] == 1
    with session_scope() as session:
        hour_after = session.get(OutcomeRollupHour, (check_ids[0], start + timedelta(hours=6)))
        assert hour_after is not None
        assert (hour_after.up, hour_after.down, hour_after.latency_count) == expected
    assert maintain_at(now)["default_rows_deleted"] == 1


def test_a_slot_without_a_partition_lands_in_default_and_moves_when_its_day_is_created(
    clean_db: str,
) -> None:
    day = date(2027, 8, 15)
    slot = midnight(day) + timedelta(hours=9, minutes=30)
    check_id = checks(slot)[0]
    result = ProbeResult(check_id, slot, slot, "up", 42.0, 200)
    with session_scope() as session:
        assert record_outcomes(session, [result], make_config(), now=slot).written == 1

    def where() -> tuple[str, int]:
        with session_scope() as session:
            row = session.execute(text("SELECT tableoid::regclass::text, id FROM outcomes")).one()
        return row[0], row[1]

    place, outcome_id = where()
    assert place == "outcomes_default"
    summary = maintain_at(midnight(day) - timedelta(days=1))
    assert summary["moved_from_default"] == 1
    assert where() == (partition_name(day), outcome_id)
    # The idempotency key still holds across the move: a redelivery writes nothing.
    with session_scope() as session:
        again = record_outcomes(session, [result], make_config(), now=slot)
    assert (again.written, again.duplicates) == (0, 1)


def test_the_migration_keeps_every_outcome_and_the_downgrade_brings_them_back(
    database_url: str,
) -> None:
    name = f"eventops_mig_{uuid.uuid4().hex[:8]}"
    # Conn reads the host from the URL or its ?host= query (the embedded server's socket).
    admin = Conn.from_url(database_url)
    local = admin.with_db(name)
    with admin.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    config = alembic_config(url)
    try:
        command.upgrade(config, "0004")
        with local.connect() as conn:
            conn.execute(
                "INSERT INTO checks (name, kind, url, method, expected_status, interval_s, "
                "timeout_s, max_body_bytes, alert_threshold, recovery_threshold, severity, "
                "enabled, group_name, depends_on, category, next_due_at, dispatch_attempts, "
                "status, consecutive_failures, consecutive_successes) VALUES ('api', 'http', "
                "'http://x/', 'GET', '[200]', 60, 5, 1000, 1, 1, 'critical', true, 'g', '[]', "
                "'availability', now(), 0, 'up', 0, 0)"
            )
            conn.execute(
                "INSERT INTO outcomes (check_id, slot, observed_at, status, latency_ms) "
                "SELECT 1, t, t, 'up', 10 FROM generate_series("
                "'2025-01-01'::timestamptz, '2025-01-03 23:00', '1 hour') t"
            )
        command.upgrade(config, "0005")
        with local.connect() as conn:
            places = conn.execute(
                "SELECT tableoid::regclass::text, count(*) FROM outcomes GROUP BY 1 ORDER BY 1"
            ).fetchall()
            assert places == [
                ("outcomes_p20250101", 24),
                ("outcomes_p20250102", 24),
                ("outcomes_p20250103", 24),
            ]
            # New rows continue the id sequence.
            new_id = conn.execute(
                "INSERT INTO outcomes (check_id, slot, observed_at, status) "
                "VALUES (1, '2030-01-01', now(), 'up') RETURNING id"
            ).fetchone()
            assert new_id == (73,)
        command.downgrade(config, "0004")
        with local.connect() as conn:
            assert conn.execute("SELECT count(*), max(id) FROM outcomes").fetchone() == (73, 73)
            assert conn.execute(
                "SELECT relkind FROM pg_class WHERE relname = 'outcomes'"
            ).fetchone() == ("r",)
    finally:
        with admin.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_the_migrated_outcome_tables_match_the_models(database_url: str) -> None:
    """What `alembic check` would compare, for this duty's tables: no difference, apart from
    the partitions themselves (tables the models do not name, by design)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from models.tables import Base

    ours = {
        "outcomes",
        "outcome_rollups_minute",
        "outcome_rollups_hour",
        "rollup_progress",
        "rollup_dirty",
        "performance_reviews",
    }

    def table_of(diff: Any) -> str | None:
        for part in diff if isinstance(diff, tuple) else diff[0]:
            table = getattr(part, "table", None)
            if table is not None and hasattr(table, "name"):
                return str(table.name)
            if isinstance(part, str) and part in ours:
                return part
        return None

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    ours_differing = [d for d in diffs if table_of(d) in ours]
    assert ours_differing == []
    partitions_only = {table_of(d) for d in diffs if (table_of(d) or "").startswith("outcomes_")}
    assert "outcomes_default" in partitions_only


def test_creating_a_partition_does_not_wait_for_the_pipelines_open_insert(clean_db: str) -> None:
    """Partitions are attached, which needs only a SHARE UPDATE EXCLUSIVE lock on `outcomes`:
    an insert transaction still open does not hold it up (the job's lock_timeout is 2 s, so
    waiting would fail it)."""
    day = date(2027, 10, 1)
    maintain_at(midnight(day))
    check_id = checks(midnight(day))[0]
    slot = midnight(day) + timedelta(hours=1)
    with db_engine().connect() as writer:
        open_insert = writer.begin()
        writer.execute(
            insert(Outcome).values(check_id=check_id, slot=slot, observed_at=slot, status="up")
        )
        summary = maintain_at(midnight(day) + timedelta(days=1))
        assert summary["created"] == [partition_name(day + timedelta(days=3))]
        open_insert.commit()
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Outcome)) == 1


def db_engine() -> Any:
    from models.db import get_engine

    return get_engine()
