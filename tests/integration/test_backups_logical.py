"""Logical backups against real Postgres with real pg_dump/pg_restore: backup, verification by
a full read, restore tests into a scratch database, idempotency per (kind, slot)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from core.backups import logical
from core.backups.crypto import is_encrypted
from core.backups.logical import (
    NO_KEY,
    restore_test,
    run_logical_backup,
    sha256_file,
    verify_backup,
    verify_due_backups,
)
from core.backups.tools import Conn, ToolError, find_tool, run_tool
from models.config import BackupsConfig
from models.db import session_scope
from models.tables import Backup, RestoreRun

KEY = "test passphrase, not a real one"
SLOT = datetime(2026, 11, 27, 14, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime):
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def platform(postgres_server_url: str) -> Iterator[Conn]:
    """A small platform database: users, vendors and bookings (the bulk, so the middle of a
    dump lies in table data)."""
    server = Conn.from_url(postgres_server_url)
    name = f"eventops_platform_{uuid.uuid4().hex[:8]}"
    with server.connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    conn = server.with_db(name)
    with conn.connect() as db:
        db.execute(
            """
            CREATE TABLE users (
                id serial PRIMARY KEY, email text NOT NULL UNIQUE,
                created_at timestamptz NOT NULL, balance numeric(10, 2) NOT NULL);
            CREATE TABLE vendors (
                id serial PRIMARY KEY, name text NOT NULL, rating double precision);
            CREATE TABLE bookings (
                id serial PRIMARY KEY, user_id int NOT NULL REFERENCES users,
                vendor_id int NOT NULL REFERENCES vendors, starts_at timestamptz NOT NULL,
                notes text);
            INSERT INTO users (email, created_at, balance)
                SELECT 'user' || g || '@example.nz', '2026-01-01'::timestamptz + g * interval '1h',
                       g * 1.25
                FROM generate_series(1, 300) g;
            INSERT INTO vendors (name, rating) SELECT 'vendor ' || g, g / 7.0
                FROM generate_series(1, 40) g;
            INSERT INTO bookings (user_id, vendor_id, starts_at, notes)
                SELECT 1 + g % 300, 1 + g % 40, '2026-06-01'::timestamptz + g * interval '5m',
                       md5(g::text) || md5((g * 7)::text)
                FROM generate_series(1, 4000) g;
            """
        )
    yield conn
    with server.connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def clock() -> Clock:
    return Clock(SLOT + timedelta(minutes=1))


@pytest.fixture
def plain() -> BackupsConfig:
    return BackupsConfig(encrypt=False, key_tables=["users", "public.bookings"])


def _row(backup_id: int) -> Backup:
    with session_scope() as session:
        row = session.get(Backup, backup_id)
        assert row is not None
        return row


def _run(row_id: int) -> RestoreRun:
    with session_scope() as session:
        row = session.get(RestoreRun, row_id)
        assert row is not None
        return row


def _backup(
    platform: Conn,
    config: BackupsConfig,
    directory: Path,
    clock: Clock,
    slot: datetime = SLOT,
    passphrase: str | None = None,
) -> dict[str, Any]:
    return run_logical_backup(
        session_scope, platform, config, directory, "hourly", slot, passphrase, clock
    )


def _database_exists(platform: Conn, name: str) -> bool:
    with platform.connect() as db:
        return (
            db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            is not None
        )


def _pg_restore_list_passes(path: Path, major: int) -> bool:
    try:
        run_tool([find_tool("pg_restore", major), "--list", path])
    except ToolError:
        return False
    return True


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def test_backup_verify_and_restore_test_pass_with_matching_counts_and_checksums(
    clean_db: str, platform: Conn, plain: BackupsConfig, tmp_path: Path, clock: Clock
) -> None:
    result = _backup(platform, plain, tmp_path, clock)
    assert result["state"] == "succeeded", result
    row = _row(result["backup_id"])
    assert row.state == "succeeded" and row.encrypted is False
    assert row.path == str(tmp_path / "hourly" / "hourly-20261127T140000Z.dump")
    assert row.size_bytes is not None and row.size_bytes > 0
    assert Path(row.path).stat().st_size == row.size_bytes
    assert sha256_file(Path(row.path)) == row.sha256
    assert row.duration_s is not None and row.snapshot_at is not None
    assert row.tables["public.users"]["rows"] == 300
    assert row.tables["public.vendors"] == {"rows": 40}  # not a key table: no checksum
    assert row.tables["public.bookings"]["rows"] == 4000
    assert len(row.tables["public.bookings"]["checksum"]) == 32
    assert row.details["format"] == "pg_dump-custom" and row.details["missing_key_tables"] == []
    assert _files(tmp_path) == [Path(row.path)]  # no partial left behind

    verified = verify_due_backups(session_scope, None, clock)
    assert verified["verified"] == 1 and verified["corrupt"] == 0
    assert _row(row.id).verify_state == "verified" and _row(row.id).verified_at == clock.at

    clock.at += timedelta(minutes=30)
    config = BackupsConfig(encrypt=False)
    outcome = restore_test(session_scope, platform, None, SLOT, None, clock, config=config)
    assert outcome["state"] == "passed", outcome
    assert outcome["backup_id"] == row.id and outcome["mismatches"] == []
    run = _run(outcome["run_id"])
    assert run.state == "passed" and run.kind == "restore-test"
    assert run.rto_s is not None and run.rto_s > 0
    assert run.rpo_s == pytest.approx((clock.at - row.snapshot_at).total_seconds(), abs=0.01)
    assert run.details["tables"]["public.bookings"]["ok"] is True
    assert run.details["objectives"]["rto_met"] is True
    assert run.target is not None and not _database_exists(platform, run.target)
    # The same slot again (a duplicate tick) does nothing.
    again = restore_test(session_scope, platform, None, SLOT, None, clock)
    assert again["skipped"] == "already passed"


def test_encrypted_backup_unreadable_without_key_verifies_and_restores_with_it(
    clean_db: str, platform: Conn, tmp_path: Path, clock: Clock
) -> None:
    config = BackupsConfig(encrypt=True, key_tables=["users"])
    result = _backup(platform, config, tmp_path, clock, passphrase=KEY)
    row = _row(result["backup_id"])
    path = Path(row.path or "")
    assert row.encrypted and path.name.endswith(".dump.enc") and is_encrypted(path)
    assert b"PGDMP" not in path.read_bytes()
    # Without the key it is not a pg_dump archive at all.
    assert not _pg_restore_list_passes(path, row.details["pg_major"])
    assert _files(tmp_path) == [path]  # the plaintext dump is gone

    without_key = verify_backup(session_scope, row.id, None, clock)
    assert without_key == {"failed": NO_KEY, "backup_id": row.id}
    assert _row(row.id).verify_state == "unverified"
    wrong_key = verify_backup(session_scope, row.id, "not the key", clock)
    assert wrong_key["verify_state"] == "corrupt" and "wrong passphrase" in wrong_key["error"]

    with session_scope() as session:
        session.execute(update(Backup).values(verify_state="unverified"))
    assert verify_backup(session_scope, row.id, KEY, clock)["verify_state"] == "verified"
    outcome = restore_test(session_scope, platform, None, SLOT, KEY, clock)
    assert outcome["state"] == "passed", outcome
    assert outcome["backup_id"] == row.id
    assert [p for p in _files(tmp_path) if p != path] == []  # decrypted copy removed


def test_encrypt_without_a_key_fails_the_backup_clearly(
    clean_db: str, platform: Conn, tmp_path: Path, clock: Clock
) -> None:
    result = _backup(platform, BackupsConfig(encrypt=True), tmp_path, clock, passphrase=None)
    assert "EVENTOPS_BACKUP_KEY is not set" in result["failed"]
    row = _row(result["backup_id"])
    assert row.state == "failed" and row.error is not None and NO_KEY in row.error
    assert _files(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncated to 10%", "one byte flipped in the middle"])
def test_damaged_dump_is_corrupt_by_full_read_although_pg_restore_list_passes(
    clean_db: str,
    platform: Conn,
    plain: BackupsConfig,
    tmp_path: Path,
    clock: Clock,
    damage: str,
) -> None:
    row = _row(_backup(platform, plain, tmp_path, clock)["backup_id"])
    path = Path(row.path or "")
    blob = bytearray(path.read_bytes())
    if damage.startswith("truncated"):
        blob = blob[: len(blob) // 10]
    else:
        blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    list_passes = _pg_restore_list_passes(path, row.details["pg_major"])
    if "flipped" in damage:
        assert list_passes, "pg_restore --list reads only the table of contents"

    first = verify_backup(session_scope, row.id, None, clock)
    assert first["verify_state"] == "corrupt" and "sha256 mismatch" in first["error"]

    # Damage the SHA-256 cannot see (the file was bad before its digest was taken): the
    # full read alone must catch it.
    with session_scope() as session:
        session.execute(
            update(Backup)
            .where(Backup.id == row.id)
            .values(sha256=sha256_file(path), verify_state="unverified")
        )
    second = verify_due_backups(session_scope, None, clock)
    assert second["corrupt"] == 1 and second["corrupt_ids"] == [row.id]
    after = _row(row.id)
    assert after.verify_state == "corrupt"
    assert after.verify_error is not None and "pg_restore exited" in after.verify_error


def test_redelivered_backup_task_produces_one_backup_row_and_one_file(
    clean_db: str, platform: Conn, plain: BackupsConfig, tmp_path: Path, clock: Clock
) -> None:
    first = _backup(platform, plain, tmp_path, clock)
    again = _backup(platform, plain, tmp_path, clock)
    assert first["state"] == "succeeded"
    assert again == {
        "skipped": "already succeeded",
        "backup_id": first["backup_id"],
        "state": "succeeded",
    }

    # Two deliveries of the next slot at the same moment, from two threads.
    slot = SLOT + timedelta(hours=1)
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def deliver() -> None:
        barrier.wait()
        results.append(_backup(platform, plain, tmp_path, clock, slot=slot))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted("skipped" in r for r in results) == [False, True], results
    skipped = next(r for r in results if "skipped" in r)
    assert skipped["skipped"] in ("running elsewhere", "already succeeded")

    with session_scope() as session:
        per_slot = dict(
            session.execute(select(Backup.slot, func.count()).group_by(Backup.slot)).all()
        )
    assert per_slot == {SLOT: 1, slot: 1}
    assert [p.name for p in _files(tmp_path)] == [
        "hourly-20261127T140000Z.dump",
        "hourly-20261127T150000Z.dump",
    ]


def test_stale_running_row_is_taken_over_and_a_fresh_one_is_not(
    clean_db: str, platform: Conn, plain: BackupsConfig, tmp_path: Path, clock: Clock
) -> None:
    fresh_slot = SLOT + timedelta(hours=1)
    with session_scope() as session:
        for slot, heartbeat in (
            (SLOT, clock.at - timedelta(minutes=10)),  # its worker died
            (fresh_slot, clock.at - timedelta(seconds=20)),  # its worker is dumping
        ):
            session.add(
                Backup(
                    kind="hourly",
                    slot=slot,
                    state="running",
                    started_at=heartbeat,
                    heartbeat_at=heartbeat,
                    details={"claim": "someone else"},
                )
            )
    taken = _backup(platform, plain, tmp_path, clock)
    assert taken["state"] == "succeeded", taken
    row = _row(taken["backup_id"])
    assert row.state == "succeeded" and row.details["took_over"] == "running"

    busy = _backup(platform, plain, tmp_path, clock, slot=fresh_slot)
    assert busy["skipped"] == "running elsewhere"
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Backup)) == 2


def test_heartbeat_is_refreshed_while_pg_dump_runs_and_partials_of_a_dead_worker_go(
    clean_db: str,
    platform: Conn,
    plain: BackupsConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logical, "HEARTBEAT_EVERY_S", 0.01)
    ticks = iter(range(10**6))

    def advancing() -> datetime:
        return SLOT + timedelta(seconds=next(ticks))

    leftover = tmp_path / "hourly" / ".hourly-20261127T140000Z.dump.deadbeef.partial"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a dump")
    result = run_logical_backup(
        session_scope, platform, plain, tmp_path, "hourly", SLOT, None, advancing
    )
    row = _row(result["backup_id"])
    assert row.heartbeat_at > row.started_at
    assert [p.name for p in _files(tmp_path)] == ["hourly-20261127T140000Z.dump"]


def test_failed_dump_records_state_failed_with_an_error_without_the_password(
    clean_db: str, platform: Conn, plain: BackupsConfig, tmp_path: Path, clock: Clock
) -> None:
    password = f"hunter2-{uuid.uuid4().hex}"
    wrong = Conn(platform.host, platform.port, platform.user, password, "no_such_database_x")
    result = _backup(wrong, plain, tmp_path, clock)
    assert "no_such_database_x" in result["failed"]
    row = _row(result["backup_id"])
    assert row.state == "failed" and row.finished_at == clock.at
    assert row.error is not None and "no_such_database_x" in row.error
    assert password not in row.error and password not in str(result)
    assert _files(tmp_path) == []
    # A failed run is data; the next delivery of the same slot may try again.
    retry = _backup(platform, plain, tmp_path, clock)
    assert retry["state"] == "succeeded" and retry["backup_id"] == row.id


def test_restore_test_drops_scratch_database_even_when_the_restore_fails(
    clean_db: str, platform: Conn, plain: BackupsConfig, tmp_path: Path, clock: Clock
) -> None:
    row = _row(_backup(platform, plain, tmp_path, clock)["backup_id"])
    path = Path(row.path or "")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with session_scope() as session:  # damaged before its digest was taken
        session.execute(update(Backup).values(sha256=sha256_file(path)))

    outcome = restore_test(session_scope, platform, row.id, SLOT, None, clock)
    assert outcome["state"] == "failed" and "pg_restore exited" in outcome["error"]
    run = _run(outcome["run_id"])
    assert run.state == "failed" and run.rto_s is None
    assert run.target is not None and run.target.startswith("eventops_restore_")
    assert not _database_exists(platform, run.target)
    assert [p.name for p in _files(tmp_path)] == [path.name]


def test_restore_test_detects_a_tampered_row_count(
    clean_db: str, platform: Conn, plain: BackupsConfig, tmp_path: Path, clock: Clock
) -> None:
    row = _row(_backup(platform, plain, tmp_path, clock)["backup_id"])
    assert verify_backup(session_scope, row.id, None, clock)["verify_state"] == "verified"
    tables = dict(row.tables)
    tables["public.vendors"] = {"rows": 41}
    with session_scope() as session:
        session.execute(update(Backup).values(tables=tables))

    outcome = restore_test(session_scope, platform, None, SLOT, None, clock)
    assert outcome["state"] == "failed"
    assert outcome["mismatches"] == ["public.vendors"]
    run = _run(outcome["run_id"])
    vendors = run.details["tables"]["public.vendors"]
    assert vendors == {"expected": {"rows": 41}, "found": {"rows": 40}, "ok": False}
    assert run.details["tables"]["public.users"]["ok"] is True
    assert run.rto_s is not None and run.rpo_s is not None
    assert not _database_exists(platform, run.target or "")


def test_restore_test_without_a_verified_backup_fails_clearly(
    clean_db: str, platform: Conn, clock: Clock
) -> None:
    outcome = restore_test(session_scope, platform, None, SLOT, None, clock)
    assert outcome["state"] == "failed"
    assert outcome["error"] == "no verified logical backup to restore"


def test_backup_files_are_private(
    clean_db: str, platform: Conn, plain: BackupsConfig, tmp_path: Path, clock: Clock
) -> None:
    row = _row(_backup(platform, plain, tmp_path, clock)["backup_id"])
    assert os.stat(row.path or "").st_mode & 0o077 == 0
