"""The hash-chained audit log on real Postgres: each form of tampering, done with raw SQL the
way an intruder would, is found and named by its first bad row; appends never fork."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from core.audit import (
    CHAIN_FINGERPRINT,
    anchor,
    audit,
    chain_hash,
    maintenance,
    record_config,
    verify_and_alert,
    verify_chain,
)
from models.compliance import AuditEntry, ComplianceRun
from models.db import session_scope
from models.tables import Incident
from tests.conftest import make_config

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def write_rows(count: int) -> None:
    with session_scope() as session:
        for n in range(1, count + 1):
            audit(
                session,
                "alice",
                "incident.acknowledge",
                f"incident:{n}",
                {"n": n, "note": "ä ü"},
                at=T0 + timedelta(minutes=n),
            )


def tamper(sql: str, **params: object) -> None:
    """Raw SQL past the append-only trigger, in one transaction."""
    with session_scope() as session:
        maintenance(session)
        session.execute(text(sql), params)


def verify(var_dir: Path | None = None):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return verify_chain(session, var_dir)


def test_an_untouched_chain_verifies(clean_db: str) -> None:
    write_rows(5)
    report = verify()
    assert report.ok and report.rows == 5 and report.last_id == 5


def test_update_and_delete_are_refused_without_the_maintenance_setting(clean_db: str) -> None:
    write_rows(2)
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), session_scope() as session:
            session.execute(text(statement))
    assert verify().ok


def test_edited_audit_row_is_reported_as_the_first_bad_row(clean_db: str) -> None:
    write_rows(5)
    tamper("UPDATE audit_log SET actor = 'mallory' WHERE id = 3")
    report = verify()
    assert not report.ok
    assert (report.first_bad_id, report.tampering) == (3, "edited")


def test_deleted_audit_row_is_reported_as_the_first_bad_row(clean_db: str) -> None:
    write_rows(5)
    tamper("DELETE FROM audit_log WHERE id = 3")
    report = verify()
    assert (report.ok, report.first_bad_id, report.tampering) == (False, 3, "deleted")


def test_inserted_audit_row_is_reported_even_with_a_correct_hash(clean_db: str) -> None:
    write_rows(5)
    # Make room at id 3 and insert a row that links to row 2 with a correctly computed hash,
    # as an intruder who read this module would.
    tamper("UPDATE audit_log SET id = id + 100 WHERE id >= 3")
    tamper("UPDATE audit_log SET id = id - 99 WHERE id >= 103")
    with session_scope() as session:
        row2 = session.get(AuditEntry, 2)
        assert row2 is not None
        at = T0 + timedelta(minutes=2, seconds=30)
        forged = chain_hash(row2.hash, at, "mallory", "silence.create", "silence:9", {})
        session.execute(
            text(
                "INSERT INTO audit_log (id, at, actor, action, subject, details, prev_hash, hash)"
                " VALUES (3, :at, 'mallory', 'silence.create', 'silence:9', '{}', :prev, :hash)"
            ),
            {"at": at, "prev": row2.hash, "hash": forged},
        )
    report = verify()
    assert (report.ok, report.first_bad_id, report.tampering) == (False, 3, "inserted")


def test_reordered_audit_rows_are_reported_at_the_first_moved_row(clean_db: str) -> None:
    write_rows(5)
    tamper("UPDATE audit_log SET id = 1000 WHERE id = 2")
    tamper("UPDATE audit_log SET id = 2 WHERE id = 3")
    tamper("UPDATE audit_log SET id = 3 WHERE id = 1000")
    report = verify()
    assert (report.ok, report.first_bad_id, report.tampering) == (False, 2, "reordered")


def test_deleting_the_newest_rows_is_caught_by_the_anchor_file(
    clean_db: str, tmp_path: Path
) -> None:
    write_rows(5)
    with session_scope() as session:
        assert anchor(session, tmp_path, T0) is not None
        assert anchor(session, tmp_path, T0) is None  # nothing new, nothing written
    # The intruder removes the tail and the table's anchors too; the file still knows.
    tamper("DELETE FROM audit_log WHERE id >= 4")
    tamper("DELETE FROM audit_anchors")
    assert verify(None).ok  # the chain alone cannot see a cut tail
    report = verify(tmp_path)
    assert (report.ok, report.first_bad_id, report.tampering) == (False, 4, "deleted")


def test_a_torn_anchor_file_line_is_noted_and_the_other_anchors_still_hold(
    clean_db: str, tmp_path: Path
) -> None:
    """A crash mid-append leaves half a line: verification notes it instead of failing with
    a JSONDecodeError every hour, the next anchor starts on a line of its own, and the good
    anchors still catch a cut tail."""
    write_rows(3)
    with session_scope() as session:
        anchor(session, tmp_path, T0)
    anchor_file = tmp_path / "audit" / "anchors.jsonl"
    with anchor_file.open("a", encoding="utf-8") as out:
        out.write('{"at": "2026-11-27T09:0')  # torn
    write_rows(2)
    with session_scope() as session:
        assert anchor(session, tmp_path, T0 + timedelta(hours=1)) is not None
    report = verify(tmp_path)
    assert report.ok and report.anchors_checked == 4  # two in the table, two in the file
    assert len(report.notes) == 1 and "line 2 is not an anchor" in report.notes[0]
    tamper("DELETE FROM audit_log WHERE id >= 5")
    tamper("DELETE FROM audit_anchors")
    report = verify(tmp_path)
    assert (report.ok, report.first_bad_id, report.tampering) == (False, 5, "deleted")


def test_a_rewritten_chain_is_caught_by_an_older_anchor(clean_db: str, tmp_path: Path) -> None:
    write_rows(3)
    with session_scope() as session:
        anchor(session, tmp_path, T0)
    # Recompute every hash after changing row 2: the chain verifies on its own again.
    tamper("UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
    with session_scope() as session:
        maintenance(session)
        prev = "0" * 64
        for row in session.scalars(select(AuditEntry).order_by(AuditEntry.id)):
            digest = chain_hash(prev, row.at, row.actor, row.action, row.subject, row.details)
            session.execute(
                text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :id"),
                {"p": prev, "h": digest, "id": row.id},
            )
            prev = digest
    report = verify(tmp_path)
    assert (report.ok, report.tampering, report.first_bad_id) == (False, "rewritten", 3)


def test_tampering_raises_a_critical_incident_naming_the_first_bad_row(
    clean_db: str, tmp_path: Path
) -> None:
    config = make_config()
    write_rows(4)
    with session_scope() as session:
        assert verify_and_alert(session, config, tmp_path, T0).ok
    tamper("DELETE FROM audit_log WHERE id = 2")
    with session_scope() as session:
        report = verify_and_alert(session, config, tmp_path, T0 + timedelta(hours=1))
    assert not report.ok
    with session_scope() as session:
        incident = session.scalars(
            select(Incident).where(Incident.fingerprint == CHAIN_FINGERPRINT)
        ).one()
        runs = session.scalars(select(ComplianceRun).order_by(ComplianceRun.id)).all()
    assert incident.severity == "critical" and incident.status == "open"
    assert "first bad row 2" in incident.title
    assert "deleted" in (incident.summary or "")
    assert [run.ok for run in runs] == [True, False]


def test_concurrent_writers_never_fork_the_chain(clean_db: str) -> None:
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for n in range(25):
                with session_scope() as session:
                    audit(session, name, "task.run", f"task:{n}", {"n": n})
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = verify()
    assert report.ok and report.rows == 100
    with session_scope() as session:
        prevs = session.scalars(select(AuditEntry.prev_hash)).all()
    assert len(set(prevs)) == 100  # no two rows claim the same predecessor


def test_config_change_is_audited_once_per_content(clean_db: str, tmp_path: Path) -> None:
    path = tmp_path / "eventops.yaml"
    path.write_text("checks: []\n")
    with session_scope() as session:
        assert record_config(session, path, "worker@a")
        assert not record_config(session, path, "worker@b")
    path.write_text("checks: []\ntimezone: UTC\n")
    with session_scope() as session:
        assert record_config(session, path, "worker@a")
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "config.changed").order_by(AuditEntry.id)
        ).all()
    assert rows[1].details["previous_sha256"] == rows[0].details["sha256"]
    assert verify().ok


def test_operator_actions_on_incidents_and_silences_are_audited(clean_db: str) -> None:
    from core import incidents
    from core.incidents import Problem, raise_problem
    from core.silences import create_silence, expire_silence

    config = make_config()
    with session_scope() as session:
        incident_id = raise_problem(
            session,
            Problem(fingerprint="x:1", title="API down", severity="critical", summary="down"),
            config,
            T0,
        )
        silence = create_silence(
            session, ["check=api"], by="bob", duration=timedelta(hours=1), now=T0
        )
        expire_silence(session, silence.id, T0 + timedelta(minutes=5), by="bob")
    assert incident_id is not None
    incidents.acknowledge(incident_id, "alice", now=T0 + timedelta(minutes=1))
    incidents.note(incident_id, "rolling back", "alice", config, now=T0 + timedelta(minutes=2))
    incidents.resolve(incident_id, "alice", config, now=T0 + timedelta(minutes=3))
    incidents.reopen(incident_id, "carol", config, now=T0 + timedelta(minutes=4))
    with session_scope() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert verify_chain(session).ok
    assert [(r.actor, r.action, r.subject) for r in rows] == [
        ("bob", "silence.create", "silence:1"),
        ("bob", "silence.expire", "silence:1"),
        ("alice", "incident.acknowledge", f"incident:{incident_id}"),
        ("alice", "incident.note", f"incident:{incident_id}"),
        ("alice", "incident.resolve", f"incident:{incident_id}"),
        ("carol", "incident.reopen", f"incident:{incident_id}"),
    ]
    assert rows[0].details["matchers"] == ["check=api"]


def test_backup_runs_are_audited_at_start_and_finish(clean_db: str) -> None:
    from core.backups import jobs
    from models.tables import Backup

    with session_scope() as session:
        claim = jobs.claim(session, Backup, "hourly", T0, T0, lease=timedelta(minutes=5))
        assert jobs.finish(session, claim, state="succeeded", finished_at=T0 + timedelta(minutes=2))
    with session_scope() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(r.action, r.subject, r.details.get("state")) for r in rows] == [
        ("backup.start", f"backups:{claim.row_id}", None),
        ("backup.finish", f"backups:{claim.row_id}", "succeeded"),
    ]
    assert rows[1].at == T0 + timedelta(minutes=2)


def test_an_accepted_break_is_sealed_and_later_tampering_is_still_found(
    clean_db: str, tmp_path: Path
) -> None:
    from core.audit import NothingToSeal, seal

    config = make_config()
    write_rows(5)
    with session_scope() as session:
        anchor(session, tmp_path, T0)
        with pytest.raises(NothingToSeal):
            seal(session, "dpo", "nothing wrong", tmp_path, T0)
    tamper("DELETE FROM audit_log WHERE id >= 4")  # the tail is cut: the anchor sees it
    with session_scope() as session:
        assert verify_and_alert(session, config, tmp_path, T0 + timedelta(hours=1)).tampering == (
            "deleted"
        )
    with session_scope() as session, pytest.raises(ValueError, match="say why"):
        seal(session, "dpo", " ", tmp_path, T0 + timedelta(hours=2))
    with session_scope() as session:
        sealed = seal(
            session, "dpo", "rows 4-5 lost in restore INC-42", tmp_path, T0 + timedelta(hours=2)
        )
    assert sealed.through_id == 3
    with session_scope() as session:
        report = verify_and_alert(session, config, tmp_path, T0 + timedelta(hours=3))
        accepted = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "audit.break-accepted")
        ).one()
        incident = session.scalars(
            select(Incident).where(Incident.fingerprint == CHAIN_FINGERPRINT)
        ).one()
    assert report.ok and incident.status == "resolved"
    assert accepted.details["found"]["tampering"] == "deleted"

    # A change to the sealed rows is still found, and so is one after the seal.
    tamper("UPDATE audit_log SET actor = 'mallory' WHERE id = 1")
    broken = verify(tmp_path)
    assert (broken.ok, broken.tampering, broken.first_bad_id) == (False, "rewritten", 3)
    tamper("UPDATE audit_log SET actor = 'alice' WHERE id = 1")
    assert verify(tmp_path).ok
    write_rows(1)
    tamper("UPDATE audit_log SET subject = 'x' WHERE id = (SELECT max(id) FROM audit_log)")
    after = verify(tmp_path)
    assert (after.ok, after.tampering) == (False, "edited")


def test_details_hash_the_same_after_a_round_trip_through_jsonb(clean_db: str) -> None:
    details = {
        "big": 1e16,
        "one": 1.0,
        "tiny": 1.5e-7,
        "huge_int": 2**70,
        "nested": [{"x": 0.1}, None, True, "ü \u2603"],
        "when": T0,  # not JSON: stored as its text
    }
    with session_scope() as session:
        audit(session, "eventops", "test.numbers", None, details, at=T0)
    assert verify().ok
