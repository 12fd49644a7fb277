"""Outcome rollups on real Postgres: minutes and hours equal the raw outcomes they sum, a late
outcome re-rolls its bucket, a repeated run changes nothing, reads stitch rollups to raw."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert

from core.pipeline import record_outcomes
from core.probing import ProbeResult
from core.rollups import (
    Figures,
    latency_bucket,
    latest_status_and_uptime,
    plan_window,
    run_rollup,
    series,
    uptime,
    window_figures,
)
from core.schedule import sync_checks
from models.config_retention import OutcomeRetentionConfig
from models.db import session_scope
from models.rollups import OutcomeRollupHour, OutcomeRollupMinute, RollupDirty
from models.tables import Check, Outcome
from tests.conftest import make_config

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
RETENTION = OutcomeRetentionConfig(settle_minutes=2)
CONFIG = make_config()


def two_checks() -> list[int]:
    checks = [
        {"name": name, "url": "http://127.0.0.1:9/", "interval": "15s", "timeout": "5s"}
        for name in ("stripe", "mapbox")
    ]
    with session_scope() as session:
        sync_checks(session, make_config(checks=checks), now=T0)
        return list(session.scalars(select(Check.id).order_by(Check.id)))


def outcomes_every_15s(check_ids: list[int], start: datetime, hours: float, seed: int = 7) -> None:
    """Probes every 15 s: latencies spread over three orders of magnitude, about 5% down,
    a few missed slots (no latency)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for check_id in check_ids:
        for n in range(int(hours * 240)):
            slot = start + timedelta(seconds=15 * n)
            roll = rng.random()
            status = "missed" if roll < 0.02 else "down" if roll < 0.07 else "up"
            latency = None if status == "missed" else round(rng.lognormvariate(4.5, 1.0), 3)
            rows.append(
                {
                    "check_id": check_id,
                    "slot": slot,
                    "observed_at": slot,
                    "status": status,
                    "latency_ms": latency,
                }
            )
    with session_scope() as session:
        for i in range(0, len(rows), 5000):
            session.execute(insert(Outcome).values(rows[i : i + 5000]))


def raw_truth(check_id: int, since: datetime, until: datetime) -> dict[str, Any]:
    with session_scope() as session:
        row = session.execute(
            text(
                """
                SELECT count(*) FILTER (WHERE status = 'up') AS up,
                       count(*) FILTER (WHERE status = 'down') AS down,
                       count(*) FILTER (WHERE status = 'missed') AS missed,
                       avg(latency_ms) AS avg, min(latency_ms) AS min, max(latency_ms) AS max,
                       array_agg(latency_ms ORDER BY latency_ms)
                           FILTER (WHERE latency_ms IS NOT NULL) AS latencies
                FROM outcomes WHERE check_id = :id AND slot > :since AND slot <= :until
                """
            ),
            {"id": check_id, "since": since, "until": until},
        ).one()
    return dict(row._mapping)


def nearest_rank(latencies: list[float], q: float) -> float:
    return latencies[max(1, math.ceil(q * len(latencies))) - 1]


def rollup_rows(model: type) -> list[tuple[Any, ...]]:
    with session_scope() as session:
        return [
            tuple(r)
            for r in session.execute(
                select(
                    model.check_id,  # type: ignore[attr-defined]
                    model.bucket,  # type: ignore[attr-defined]
                    model.up,  # type: ignore[attr-defined]
                    model.down,  # type: ignore[attr-defined]
                    model.missed,  # type: ignore[attr-defined]
                    model.latency_count,  # type: ignore[attr-defined]
                    model.latency_sum,  # type: ignore[attr-defined]
                    model.histogram,  # type: ignore[attr-defined]
                ).order_by(model.check_id, model.bucket)  # type: ignore[attr-defined]
            )
        ]


def roll(now: datetime) -> dict[str, Any]:
    with session_scope() as session:
        return run_rollup(session, RETENTION, now=now)


def test_minute_and_hour_rollups_equal_the_raw_outcomes_over_any_window(clean_db: str) -> None:
    check_ids = two_checks()
    outcomes_every_15s(check_ids, T0, hours=3)
    summary = roll(T0 + timedelta(hours=3, minutes=5))
    assert summary["minute_watermark"] == (T0 + timedelta(hours=3, minutes=3)).isoformat()
    assert summary["hour_watermark"] == (T0 + timedelta(hours=3)).isoformat()
    assert len(rollup_rows(OutcomeRollupMinute)) == 2 * 180
    assert len(rollup_rows(OutcomeRollupHour)) == 2 * 3

    # Windows with ragged edges, whole hours, and a tail past the watermark.
    windows = [
        (T0 - timedelta(seconds=1), T0 + timedelta(hours=3, minutes=10)),
        (T0 + timedelta(minutes=7, seconds=30), T0 + timedelta(hours=2, minutes=41, seconds=15)),
        (T0 + timedelta(minutes=59, seconds=45), T0 + timedelta(hours=1, minutes=0, seconds=15)),
        (T0 + timedelta(hours=1), T0 + timedelta(hours=2)),
    ]
    with session_scope() as session:
        for since, until in windows:
            got = window_figures(session, check_ids, since, until)
            for check_id in check_ids:
                truth = raw_truth(check_id, since, until)
                f = got[check_id]
                assert (f.up, f.down, f.missed) == (truth["up"], truth["down"], truth["missed"])
                assert f.latency_avg == pytest.approx(float(truth["avg"]), rel=1e-9)
                assert (f.latency_min, f.latency_max) == (truth["min"], truth["max"])
                for q in (0.5, 0.95, 0.99):
                    exact = nearest_rank(truth["latencies"], q)
                    estimate = f.percentile(q)
                    assert estimate is not None
                    assert abs(estimate - exact) <= 0.05 * exact, (since, until, q)


def test_the_watermark_lags_now_by_the_settle_delay(clean_db: str) -> None:
    check_ids = two_checks()
    outcomes_every_15s(check_ids, T0, hours=0.5)
    roll(T0 + timedelta(minutes=10, seconds=30))
    with session_scope() as session:
        buckets = set(session.scalars(select(OutcomeRollupMinute.bucket)))
    # Now 09:10:30, settle 2 min: 09:08 is the watermark, 09:07 the newest rolled minute.
    assert max(buckets) == T0 + timedelta(minutes=7)
    assert min(buckets) == T0


def test_a_repeated_rollup_run_changes_nothing(clean_db: str) -> None:
    check_ids = two_checks()
    outcomes_every_15s(check_ids, T0, hours=2)
    now = T0 + timedelta(hours=2, minutes=3)
    first = roll(now)
    minutes, hours = rollup_rows(OutcomeRollupMinute), rollup_rows(OutcomeRollupHour)
    again = roll(now)
    assert rollup_rows(OutcomeRollupMinute) == minutes
    assert rollup_rows(OutcomeRollupHour) == hours
    assert again["minutes"] == 0 and again["hours"] == 0
    assert again["minute_watermark"] == first["minute_watermark"]


def test_a_late_outcome_re_rolls_its_minute_and_its_hour(clean_db: str) -> None:
    check_id = two_checks()[0]
    outcomes_every_15s([check_id], T0, hours=2)
    with session_scope() as session:
        session.execute(text("DELETE FROM outcomes WHERE slot = :slot"), {"slot": T0})
    roll(T0 + timedelta(hours=2, minutes=5))
    first_hour = (T0 - timedelta(seconds=1), T0 + timedelta(hours=1, microseconds=-1))
    before = raw_truth(check_id, *first_hour)

    # The outcome of 09:00:00 arrives two hours late (handed off while Postgres was down).
    late = ProbeResult(check_id, T0, T0, "down", 9000.0, 503, "bad_status")
    now = T0 + timedelta(hours=2, minutes=6)
    with session_scope() as session:
        record_outcomes(session, [late], CONFIG, now=now)
        assert session.scalars(select(RollupDirty.bucket)).all() == [T0]
    roll(now)

    with session_scope() as session:
        minute = session.get(OutcomeRollupMinute, (check_id, T0))
        hour = session.get(OutcomeRollupHour, (check_id, T0))
        assert session.scalars(select(RollupDirty.bucket)).all() == []
    assert minute is not None and hour is not None
    minute_truth = raw_truth(check_id, T0 - timedelta(seconds=1), T0 + timedelta(seconds=59))
    assert (minute.up, minute.down, minute.latency_max) == (
        minute_truth["up"],
        minute_truth["down"],
        9000.0,
    )
    assert (hour.up, hour.down) == (before["up"], before["down"] + 1)
    assert hour.latency_max == 9000.0
    assert hour.histogram[str(latency_bucket(9000.0))] >= 1


def test_an_outcome_written_on_time_queues_no_re_roll(clean_db: str) -> None:
    check_id = two_checks()[0]
    slot = T0 + timedelta(minutes=30)
    with session_scope() as session:
        record_outcomes(
            session,
            [ProbeResult(check_id, slot, slot, "up", 20.0, 200)],
            CONFIG,
            now=slot + timedelta(seconds=3),
        )
        assert session.scalars(select(RollupDirty.bucket)).all() == []


def test_series_reaches_now_from_rollups_and_the_raw_tail(clean_db: str) -> None:
    check_id = two_checks()[0]
    outcomes_every_15s([check_id], T0, hours=3)
    now = T0 + timedelta(hours=3)
    roll(now - timedelta(minutes=20))  # the watermark is 22 minutes behind
    with session_scope() as session:
        minutes = series(session, check_id, T0, now, "minute")
        hours = series(session, check_id, T0, now, "hour")
        overall = uptime(session, [check_id], T0 - timedelta(seconds=1), now)[check_id]
    assert len(minutes) == 180
    assert minutes[-1]["bucket"] == (now - timedelta(minutes=1)).isoformat()
    assert [h["bucket"] for h in hours] == [(T0 + timedelta(hours=n)).isoformat() for n in range(3)]
    truth = raw_truth(check_id, T0 - timedelta(seconds=1), now)
    assert sum(h["up"] for h in hours) == sum(m["up"] for m in minutes) == truth["up"]
    assert sum(h["down"] for h in hours) == truth["down"]
    assert overall == pytest.approx(truth["up"] / (truth["up"] + truth["down"]))
    with pytest.raises(ValueError, match="resolution"), session_scope() as session:
        series(session, check_id, T0, now, "day")  # type: ignore[arg-type]


def test_the_status_board_reads_uptime_and_latency_per_check(clean_db: str) -> None:
    check_ids = two_checks()
    outcomes_every_15s(check_ids, T0, hours=2)
    now = T0 + timedelta(hours=2)
    roll(now)
    with session_scope() as session:
        board = latest_status_and_uptime(session, None, now=now, window=timedelta(hours=1))
    assert set(board) == set(check_ids)
    for check_id in check_ids:
        truth = raw_truth(check_id, now - timedelta(hours=1), now)
        entry = board[check_id]
        assert entry["probes"] == truth["up"] + truth["down"]
        assert entry["uptime"] == pytest.approx(truth["up"] / entry["probes"])
        assert entry["avg_ms"] == pytest.approx(float(truth["avg"]))


def test_a_window_is_split_into_whole_hours_whole_minutes_and_raw_edges() -> None:
    marks = {"minute": T0 + timedelta(hours=3, minutes=3), "hour": T0 + timedelta(hours=3)}
    plan = plan_window(T0 + timedelta(minutes=7, seconds=30), T0 + timedelta(hours=4), marks)
    assert plan.hour == ((T0 + timedelta(hours=1), T0 + timedelta(hours=3)),)
    assert plan.minute == (
        (T0 + timedelta(minutes=8), T0 + timedelta(hours=1)),
        (T0 + timedelta(hours=3), T0 + timedelta(hours=3, minutes=3)),
    )
    assert [(lo, hi) for lo, hi, _ in plan.raw][1] == (
        T0 + timedelta(hours=3, minutes=3),
        T0 + timedelta(hours=4),
    )
    assert plan_window(T0, T0 + timedelta(hours=1), {}).minute == ()


def test_histogram_percentiles_stay_within_five_percent() -> None:
    rng = random.Random(3)
    latencies = sorted(rng.lognormvariate(5, 1.2) for _ in range(5000))
    figures = Figures()
    for latency in latencies:
        figures.add(1, 0, 0, 1, latency, latency, latency, {latency_bucket(latency): 1})
    for q in (0.5, 0.9, 0.95, 0.99, 0.999):
        exact = nearest_rank(latencies, q)
        estimate = figures.percentile(q)
        assert estimate is not None and abs(estimate - exact) <= 0.05 * exact


def test_a_slot_the_dispatcher_gives_up_on_re_rolls_its_minute_as_missed(clean_db: str) -> None:
    from core.schedule import DueSlot, record_missed

    check_id = two_checks()[0]
    outcomes_every_15s([check_id], T0, hours=0.25)
    with session_scope() as session:
        session.execute(text("DELETE FROM outcomes WHERE slot = :slot"), {"slot": T0})
    now = T0 + timedelta(minutes=20)
    roll(now)
    with session_scope() as session:
        before = session.get(OutcomeRollupMinute, (check_id, T0))
        assert before is not None
        counts = (before.up + before.down, before.missed)
        record_missed(session, [DueSlot(check_id, T0, 4)], now)
    roll(now)
    with session_scope() as session:
        after = session.get(OutcomeRollupMinute, (check_id, T0))
        assert after is not None
        assert (after.up + after.down, after.missed) == (counts[0], counts[1] + 1)


def test_a_second_rollup_while_one_runs_skips_and_the_first_one_counts(clean_db: str) -> None:
    """Two beats, or a redelivery while the first run is still going: the advisory lock lets
    one run work; the other returns at once and writes nothing."""
    check_ids = two_checks()
    outcomes_every_15s(check_ids, T0, hours=1)
    now = T0 + timedelta(hours=1, minutes=5)
    with session_scope() as first:
        summary = run_rollup(first, RETENTION, now=now)
        with session_scope() as second:
            assert run_rollup(second, RETENTION, now=now) == {"busy": True}
    assert summary["minutes"] == 2 * 60
    assert len(rollup_rows(OutcomeRollupMinute)) == 2 * 60
