"""Claiming due slots from Postgres: once per slot, lost dispatches sent again, never skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core.pipeline import record_outcomes
from core.probing import ProbeResult
from core.schedule import LEASE_GRACE, MAX_DISPATCH_ATTEMPTS, claim_due_slots, sync_checks
from models.db import session_scope
from models.tables import Check, Outcome
from tests.conftest import make_config

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def three_checks() -> None:
    checks = [
        {"name": n, "url": "http://127.0.0.1:9/", "interval": "1m", "timeout": "5s"}
        for n in ("a", "b", "c")
    ]
    with session_scope() as session:
        sync_checks(session, make_config(checks=checks), now=T0)


def claim(now: datetime, limit: int = 1000) -> list[tuple[int, datetime, int]]:
    with session_scope() as session:
        return [(s.check_id, s.slot, s.attempt) for s in claim_due_slots(session, now, limit)]


def up(check_id: int, slot: datetime) -> ProbeResult:
    return ProbeResult(check_id, slot, slot, "up", 1.0, 200)


def test_new_checks_are_due_at_once_and_claimed_exactly_once(clean_db: str) -> None:
    three_checks()
    first = claim(T0)
    assert sorted(c for c, _, _ in first) == [1, 2, 3]
    assert {slot for _, slot, _ in first} == {T0}
    assert claim(T0) == []  # a second beat, or a redelivered tick, finds nothing


def test_the_next_slot_comes_one_interval_later(clean_db: str) -> None:
    three_checks()
    for check_id, slot, _ in claim(T0):
        with session_scope() as session:
            record_outcomes(session, [up(check_id, slot)], make_config())
    assert claim(T0 + timedelta(seconds=59)) == []
    assert {slot for _, slot, _ in claim(T0 + timedelta(seconds=60))} == {T0 + timedelta(minutes=1)}


def test_after_an_outage_one_current_slot_is_claimed_not_a_burst_of_old_ones(
    clean_db: str,
) -> None:
    three_checks()
    for check_id, slot, _ in claim(T0):
        with session_scope() as session:
            record_outcomes(session, [up(check_id, slot)], make_config())
    late = T0 + timedelta(minutes=10, seconds=30)
    claimed = claim(late)
    assert len(claimed) == 3
    with session_scope() as session:
        next_due = set(session.scalars(select(Check.next_due_at)))
    assert next_due == {T0 + timedelta(minutes=11)}


def test_a_slot_whose_task_was_lost_is_sent_again_after_its_lease(clean_db: str) -> None:
    three_checks()
    claim(T0)  # dispatched, but the tasks vanish (Redis flushed, worker killed)
    lease_end = T0 + timedelta(seconds=5) + LEASE_GRACE
    assert claim(lease_end - timedelta(seconds=1)) == []
    again = claim(lease_end)
    assert sorted(again) == [(1, T0, 2), (2, T0, 2), (3, T0, 2)]


def test_a_slot_lost_too_often_is_recorded_as_missed_and_the_check_moves_on(
    clean_db: str,
) -> None:
    three_checks()
    now = T0
    claim(now)
    for _ in range(MAX_DISPATCH_ATTEMPTS):
        now += timedelta(seconds=5) + LEASE_GRACE
        last = claim(now)
    with session_scope() as session:
        outcomes = session.scalars(select(Outcome)).all()
        checks = session.scalars(select(Check)).all()
    assert {(o.status, o.reason, o.slot) for o in outcomes} == {("missed", "probe_lost", T0)}
    assert len(outcomes) == 3
    # The same tick moved each check on to its next slot.
    assert {slot for _, slot, _ in last} == {T0 + timedelta(minutes=1)}
    assert {c.inflight_slot for c in checks} == {T0 + timedelta(minutes=1)}


def test_the_claim_limit_is_respected_and_the_rest_wait(clean_db: str) -> None:
    three_checks()
    assert len(claim(T0, limit=2)) == 2
    assert len(claim(T0, limit=2)) == 1


def test_config_sync_disables_removed_checks_and_keeps_their_history(clean_db: str) -> None:
    three_checks()
    keep = [{"name": "a", "url": "http://127.0.0.1:9/", "interval": "1m", "timeout": "5s"}]
    with session_scope() as session:
        counts = sync_checks(session, make_config(checks=keep), now=T0)
    assert counts == {"checks": 1, "disabled": 2}
    assert [c for c, _, _ in claim(T0)] == [1]


def test_a_shorter_interval_takes_effect_without_waiting_out_the_old_one(clean_db: str) -> None:
    slow = [{"name": "a", "url": "http://127.0.0.1:9/", "interval": "1h", "timeout": "5s"}]
    fast = [{"name": "a", "url": "http://127.0.0.1:9/", "interval": "30s", "timeout": "5s"}]
    with session_scope() as session:
        sync_checks(session, make_config(checks=slow), now=T0)
    [(check_id, slot, _)] = claim(T0)
    with session_scope() as session:
        record_outcomes(session, [up(check_id, slot)], make_config())
        sync_checks(session, make_config(checks=fast), now=T0 + timedelta(minutes=1))
    assert [c for c, _, _ in claim(T0 + timedelta(minutes=1, seconds=30))] == [check_id]
