"""The results pipeline on real Postgres: outcomes once, state, incidents, escalation rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError

from core.pipeline import record_outcomes
from core.probing import ProbeResult
from core.schedule import sync_checks
from models.db import session_scope
from models.tables import Check, Escalation, Incident, IncidentEvent, Outcome
from tests.conftest import make_config

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
CONFIG = make_config()


def one_check(**fields: object) -> int:
    check = {"name": "stripe", "url": "http://127.0.0.1:9/", "interval": "1m", "timeout": "5s"}
    check.update(fields)
    with session_scope() as session:
        sync_checks(session, make_config(checks=[check]), now=T0)
        return session.scalars(select(Check.id)).one()


def outcome(check_id: int, minute: int, ok: bool) -> ProbeResult:
    slot = T0 + timedelta(minutes=minute)
    if ok:
        return ProbeResult(check_id, slot, slot, "up", 12.0, 200)
    return ProbeResult(check_id, slot, slot, "down", 40.0, 503, "bad_status", "HTTP 503")


def feed(*results: ProbeResult, minute: int = 0):
    with session_scope() as session:
        return record_outcomes(session, list(results), CONFIG, now=T0 + timedelta(minutes=minute))


def count(model: type) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_redelivered_batch_writes_nothing_twice_and_counts_nothing_twice(clean_db: str) -> None:
    check_id = one_check(alert_threshold=3)
    batch = [outcome(check_id, 0, False), outcome(check_id, 1, False)]
    first = feed(*batch)
    again = feed(*batch)
    assert (first.written, first.duplicates) == (2, 0)
    assert (again.written, again.duplicates) == (0, 2)
    assert count(Outcome) == 2
    with session_scope() as session:
        check = session.get(Check, check_id)
        assert check is not None
        assert (check.status, check.consecutive_failures) == ("failing", 2)


def test_reaching_the_alert_threshold_opens_one_critical_incident_due_now(clean_db: str) -> None:
    check_id = one_check(alert_threshold=2)
    assert feed(outcome(check_id, 0, False)).opened == []
    summary = feed(outcome(check_id, 1, False), minute=1)
    assert len(summary.opened) == 1 and summary.urgent
    feed(outcome(check_id, 2, False), minute=2)  # still failing: no second incident
    with session_scope() as session:
        incident = session.scalars(select(Incident)).one()
        escalation = session.scalars(select(Escalation)).one()
        events = session.scalars(select(IncidentEvent.kind)).all()
    assert incident.fingerprint == "check:stripe"
    assert incident.labels == {"check": "stripe", "group": "stripe", "severity": "critical"}
    assert (incident.severity, incident.status, incident.title) == (
        "critical",
        "open",
        "stripe is down",
    )
    assert "bad_status (HTTP 503)" in (incident.summary or "")
    assert (escalation.kind, escalation.due_at) == ("opened", T0 + timedelta(minutes=1))
    assert events == ["opened", "classified"]


def test_a_warning_check_escalates_after_its_delay_not_at_once(clean_db: str) -> None:
    check_id = one_check(severity="warning")
    summary = feed(outcome(check_id, 0, False))
    assert not summary.urgent
    with session_scope() as session:
        escalation = session.scalars(select(Escalation)).one()
    assert escalation.due_at == T0 + timedelta(minutes=15)


def test_recovery_resolves_after_the_recovery_threshold_and_cancels_pending_pages(
    clean_db: str,
) -> None:
    check_id = one_check(severity="warning", recovery_threshold=2)
    [incident_id] = feed(outcome(check_id, 0, False)).opened
    assert feed(outcome(check_id, 1, True), minute=1).resolved == []
    assert feed(outcome(check_id, 2, True), minute=2).resolved == [incident_id]
    with session_scope() as session:
        incident = session.get(Incident, incident_id)
        escalations = session.scalars(select(Escalation)).all()
        check = session.get(Check, check_id)
    assert incident is not None and incident.status == "resolved"
    assert incident.resolved_at == T0 + timedelta(minutes=2)
    # Nobody was told it opened, so nobody is told it resolved; the pending page is void.
    assert [(e.kind, e.state) for e in escalations] == [("opened", "cancelled")]
    assert check is not None and check.status == "up"


def test_a_notified_incident_queues_a_resolution_notice(clean_db: str) -> None:
    check_id = one_check(recovery_threshold=1)
    [incident_id] = feed(outcome(check_id, 0, False)).opened
    with session_scope() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        incident.notified_at = T0
    feed(outcome(check_id, 1, True), minute=1)
    with session_scope() as session:
        kinds = session.scalars(select(Escalation.kind).order_by(Escalation.id)).all()
    assert kinds == ["opened", "resolved"]


def test_a_late_older_outcome_is_stored_but_does_not_move_state_backwards(clean_db: str) -> None:
    check_id = one_check(alert_threshold=1)
    feed(outcome(check_id, 5, True))
    summary = feed(outcome(check_id, 4, False))
    assert summary.written == 1 and summary.opened == []
    with session_scope() as session:
        check = session.get(Check, check_id)
    assert check is not None and check.status == "up"
    # The latest-status columns still describe minute 5, not the late minute 4.
    assert (check.last_slot, check.last_latency_ms, check.last_reason) == (
        T0 + timedelta(minutes=5),
        12.0,
        None,
    )


def test_a_check_the_caller_already_loaded_shows_the_state_the_batch_wrote(
    clean_db: str,
) -> None:
    # The write path updates checks past the ORM; an object loaded earlier in the same
    # session must not keep answering with the old state.
    check_id = one_check(alert_threshold=3)
    with session_scope() as session:
        check = session.get_one(Check, check_id)
        assert check.status == "unknown"
        record_outcomes(session, [outcome(check_id, 0, False)], CONFIG, now=T0)
        assert (check.status, check.consecutive_failures, check.last_reason) == (
            "failing",
            1,
            "bad_status",
        )


def test_an_outcome_whose_detail_holds_nul_and_broken_unicode_is_stored(clean_db: str) -> None:
    # A hostile endpoint picks the words a protocol error quotes; Postgres text cannot hold
    # NUL or a lone surrogate, and the batch must not fail over them.
    check_id = one_check()
    slot = T0
    hostile = ProbeResult(
        check_id, slot, slot, "down", 3.0, None, "protocol_error", "bad line: \x00\udcff end"
    )
    assert feed(hostile).written == 1
    with session_scope() as session:
        stored = session.scalars(select(Outcome.detail)).one()
    assert stored == "bad line: \ufffd? end"


def test_a_failure_soon_after_resolution_reopens_the_same_incident(clean_db: str) -> None:
    check_id = one_check(recovery_threshold=1)
    [first] = feed(outcome(check_id, 0, False)).opened
    feed(outcome(check_id, 1, True), minute=1)
    assert feed(outcome(check_id, 2, False), minute=2).opened == [first]
    assert count(Incident) == 1
    with session_scope() as session:
        incident = session.get(Incident, first)
        assert incident is not None
        assert (incident.status, incident.reopen_count) == ("open", 1)


def test_a_failure_long_after_resolution_opens_a_new_incident(clean_db: str) -> None:
    check_id = one_check(recovery_threshold=1)
    [first] = feed(outcome(check_id, 0, False)).opened
    feed(outcome(check_id, 1, True), minute=1)
    [second] = feed(outcome(check_id, 40, False), minute=40).opened
    assert second != first
    assert count(Incident) == 2


def test_outcomes_in_one_batch_apply_in_slot_order(clean_db: str) -> None:
    check_id = one_check(alert_threshold=2, recovery_threshold=1)
    # Arrives shuffled: fail@0, fail@1 opens, pass@2 resolves.
    summary = feed(
        outcome(check_id, 2, True), outcome(check_id, 0, False), outcome(check_id, 1, False)
    )
    assert len(summary.opened) == 1 and len(summary.resolved) == 1


def test_a_check_alternating_pass_and_fail_is_one_incident_held_open_as_flapping(
    clean_db: str,
) -> None:
    check_id = one_check(alert_threshold=1, recovery_threshold=1)
    for minute in range(12):
        feed(outcome(check_id, minute, ok=minute % 2 == 1), minute=minute)
    with session_scope() as session:
        incident = session.scalars(select(Incident)).one()
        kinds = session.scalars(select(Escalation.kind).order_by(Escalation.id)).all()
    assert incident.flapping and incident.status == "open"
    assert incident.reopen_count >= 3
    # Pages: the first opening, reopens until flapping was detected, one flapping notice.
    assert kinds.count("flapping") == 1
    assert kinds.count("reopened") == 2
    # Steady passes for a whole flap window let it resolve.
    for minute in range(12, 50):
        feed(outcome(check_id, minute, ok=True), minute=minute)
    with session_scope() as session:
        incident = session.scalars(select(Incident)).one()
    assert incident.status == "resolved"
    assert count(Incident) == 1


def two_dependent_checks() -> dict[str, int]:
    checks = [
        {
            "name": "supabase",
            "url": "http://127.0.0.1:9/",
            "interval": "1m",
            "timeout": "5s",
            "recovery_threshold": 1,
        },
        {
            "name": "stripe",
            "url": "http://127.0.0.1:9/",
            "interval": "1m",
            "timeout": "5s",
            "recovery_threshold": 1,
            "depends_on": ["supabase"],
        },
    ]
    with session_scope() as session:
        sync_checks(session, make_config(checks=checks), now=T0)
        return {name: id_ for id_, name in session.execute(select(Check.id, Check.name))}


def test_a_check_whose_dependency_is_down_is_linked_to_it_and_pages_nobody(clean_db: str) -> None:
    ids = two_dependent_checks()
    [parent] = feed(outcome(ids["supabase"], 0, False)).opened
    [child] = feed(outcome(ids["stripe"], 0, False)).opened
    with session_scope() as session:
        incident = session.get(Incident, child)
        assert incident is not None and incident.parent_incident_id == parent
        child_steps = session.scalars(select(Escalation).where(Escalation.incident_id == child))
        assert list(child_steps) == []


def test_when_the_dependency_recovers_first_the_still_failing_child_pages(clean_db: str) -> None:
    ids = two_dependent_checks()
    feed(outcome(ids["supabase"], 0, False))
    [child] = feed(outcome(ids["stripe"], 0, False)).opened
    feed(outcome(ids["supabase"], 1, True), minute=1)
    with session_scope() as session:
        steps = session.execute(
            select(Escalation.kind, Escalation.due_at).where(Escalation.incident_id == child)
        ).all()
    assert [tuple(s) for s in steps] == [("opened", T0 + timedelta(minutes=1))]


def test_a_suppressed_child_still_resolves_on_its_own(clean_db: str) -> None:
    ids = two_dependent_checks()
    feed(outcome(ids["supabase"], 0, False))
    [child] = feed(outcome(ids["stripe"], 0, False)).opened
    assert feed(outcome(ids["stripe"], 1, True), minute=1).resolved == [child]


def test_outcomes_handed_off_while_postgres_was_down_are_written_later_once(
    clean_db: str,
) -> None:
    """The probe task's fallback when Postgres fails at write time: the outcomes travel as
    JSON through Redis to `pipeline.record_outcomes`, which writes them and their effects
    when Postgres is back, and a redelivery of that hand-off changes nothing."""
    from tasks.pipeline import record_outcomes_later

    check_id = one_check(severity="warning")  # not urgent: no sweeper kick needed here
    handed_off = [outcome(check_id, 0, False).to_json()]
    first = record_outcomes_later.run(handed_off)
    again = record_outcomes_later.run(handed_off)
    assert (first["written"], len(first["opened"])) == (1, 1)
    assert (again["written"], again["duplicates"], again["opened"]) == (0, 1, [])
    assert (count(Outcome), count(Incident)) == (1, 1)
    with session_scope() as session:
        stored = session.scalars(select(Outcome)).one()
    assert (stored.slot, stored.reason, stored.http_status) == (T0, "bad_status", 503)


def test_a_database_error_in_the_write_path_is_a_dbapi_error_the_tasks_retry_on(
    clean_db: str,
) -> None:
    # run_batch defers and record_outcomes_later retries on DBAPIError: a lock timeout (or a
    # statement timeout, a deadlock) in the write path must come out as one.
    check_id = one_check()
    with session_scope() as holder:
        holder.execute(select(Check).where(Check.id == check_id).with_for_update())
        with pytest.raises(DBAPIError), session_scope() as session:
            session.execute(text("SET LOCAL lock_timeout = '200ms'"))
            record_outcomes(session, [outcome(check_id, 0, False)], CONFIG, now=T0)


def test_a_resolve_held_by_a_flapping_incident_keeps_the_next_failure_down(
    clean_db: str,
) -> None:
    # A flapping incident stays open through a pass less than a flap window after it came
    # back; a failure right after is then part of that open incident, whether the two
    # outcomes arrive in one batch or two.
    check_id = one_check(alert_threshold=2, recovery_threshold=1)
    feed(outcome(check_id, 0, False), outcome(check_id, 1, False), minute=1)
    with session_scope() as session:
        session.execute(
            update(Incident).values(flapping=True, reopened_at=T0 + timedelta(minutes=1))
        )
    summary = feed(outcome(check_id, 2, True), outcome(check_id, 3, False), minute=3)
    assert summary.resolved == [] and summary.opened == []
    with session_scope() as session:
        check = session.get_one(Check, check_id)
        incident = session.scalars(select(Incident)).one()
    assert (check.status, check.consecutive_failures) == ("down", 1)
    assert incident.status == "open"


def test_an_open_incident_left_by_a_deleted_check_resolves_when_its_namesake_passes(
    clean_db: str,
) -> None:
    # Incidents are matched by fingerprint (`check:<name>`), as raise_problem and
    # resolve_problem match them: a check deleted and added again under the same name
    # (its old incident's check_id set to NULL) takes its open incident over.
    check_id = one_check(alert_threshold=1, recovery_threshold=1)
    [opened] = feed(outcome(check_id, 0, False)).opened
    with session_scope() as session:
        session.execute(update(Incident).values(check_id=None))
    assert feed(outcome(check_id, 1, True), minute=1).resolved == [opened]


def test_the_same_slot_twice_in_one_batch_counts_once(clean_db: str) -> None:
    check_id = one_check(alert_threshold=3)
    summary = feed(outcome(check_id, 0, False), outcome(check_id, 0, False))
    assert (summary.written, summary.duplicates) == (1, 1)
    with session_scope() as session:
        check = session.get_one(Check, check_id)
    assert (check.status, check.consecutive_failures) == ("failing", 1)


def test_a_slot_in_the_repeated_dst_hour_advances_state_on_a_server_in_local_time(
    clean_db: str,
) -> None:
    # NZ daylight time ended at 2026-04-05 03:00 local: 14:30Z is 02:30 for the second time.
    # Postgres returns the stored slot in the session's zone; the key must still match.
    check_id = one_check(alert_threshold=3)
    slot = datetime(2026, 4, 4, 14, 30, tzinfo=UTC)
    down = ProbeResult(check_id, slot, slot, "down", 40.0, 503, "bad_status", "HTTP 503")
    with session_scope() as session:
        session.execute(text("SET LOCAL TimeZone = 'Pacific/Auckland'"))
        assert record_outcomes(session, [down], CONFIG, now=slot).written == 1
    with session_scope() as session:
        check = session.get_one(Check, check_id)
    assert (check.status, check.consecutive_failures, check.last_slot) == ("failing", 1, slot)


def test_a_latency_that_is_not_a_number_is_stored_as_unknown(clean_db: str) -> None:
    check_id = one_check()
    odd = ProbeResult(check_id, T0, T0, "up", float("nan"), 200)
    assert feed(odd).written == 1
    with session_scope() as session:
        assert session.scalars(select(Outcome.latency_ms)).one() is None
