"""Point-in-time recovery and the disaster-recovery drill against real PostgreSQL servers:
a restore to a moment between two writes keeps the first and not the second."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select

from core.backups.drill import run_drill
from core.backups.pitr import (
    LocalCluster,
    PitrError,
    WalReceiver,
    archiving_settings,
    hand_over,
    point_in_time_restore,
    restore_to_time,
    run_base_backup,
)
from core.backups.tools import find_tool, run_tool
from models.db import session_scope
from models.tables import Backup, RestoreRun

SLOT = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    # Not under pytest's 0700 tmp dir: the servers run as an unprivileged user when root.
    path = Path(tempfile.mkdtemp(prefix="eventops-pitr-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def platform(root: Path) -> Iterator[LocalCluster]:
    """The "platform" server: archives every completed WAL segment into root/wal."""
    wal = hand_over(root / "wal")
    cluster = LocalCluster.init(root / "platform", archiving_settings(wal)).start()
    yield cluster
    cluster.remove()


def wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def postgres_running_on(data_dir: Path) -> bool:
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(data_dir) in " ".join(
            proc.info["cmdline"] or []
        ):
            return True
    return False


def test_restore_to_a_time_between_two_writes(
    clean_db: str, platform: LocalCluster, root: Path
) -> None:
    clock = lambda: SLOT + timedelta(minutes=5)  # noqa: E731
    with platform.conn().connect() as db:
        db.execute("CREATE TABLE pitr (label text, at timestamptz DEFAULT clock_timestamp())")
        db.execute("INSERT INTO pitr (label) VALUES ('A')")

    first = run_base_backup(session_scope, platform.conn(), root / "backups", SLOT, clock)
    again = run_base_backup(session_scope, platform.conn(), root / "backups", SLOT, clock)
    assert first["state"] == "succeeded", first
    assert again["skipped"] and again["id"] == first["id"]
    with session_scope() as session:
        base = session.execute(select(Backup)).scalar_one()  # one row for two ticks
    assert base.kind == "base" and base.size_bytes and len(base.sha256 or "") == 64
    assert base.snapshot_at is not None and base.duration_s is not None
    assert {"base.tar.gz", "pg_wal.tar.gz"} <= set(base.details["files"])

    with platform.conn().connect() as db:
        db.execute("INSERT INTO pitr (label) VALUES ('B2')")
        row = db.execute("SELECT pg_sleep(0.2), clock_timestamp()").fetchone()
        assert row is not None
        target_time = row[1]
        db.execute("SELECT pg_sleep(0.2)")
        db.execute("INSERT INTO pitr (label) VALUES ('B')")
        segment = db.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    assert segment is not None
    wait_for(root / "wal" / segment[0])

    # RPO is measured from the newest archived segment: 42 s before "now".
    archived = datetime.fromtimestamp((root / "wal" / segment[0]).stat().st_mtime, UTC)
    clock = lambda: archived + timedelta(seconds=42)  # noqa: E731
    target = root / "restored"
    result = point_in_time_restore(
        session_scope, None, root / "wal", target_time, target, SLOT, clock
    )
    assert result["state"] == "passed", result
    assert result["backup_id"] == base.id and result["rto_s"] > 0
    assert result["rpo_s"] == pytest.approx(42, abs=0.01)
    assert datetime.fromisoformat(result["restored_to"]) <= target_time
    repeat = point_in_time_restore(
        session_scope, None, root / "wal", target_time, target, SLOT, clock
    )
    assert repeat["skipped"]
    with session_scope() as session:
        run = session.execute(select(RestoreRun)).scalar_one()
    assert (run.kind, run.state, run.target) == ("pitr", "passed", str(target))

    restored = LocalCluster(target)
    assert not restored.is_running()  # left stopped for the operator
    with restored.start(), restored.conn().connect() as db:
        labels = [r[0] for r in db.execute("SELECT label FROM pitr ORDER BY at")]
        in_recovery = db.execute("SELECT pg_is_in_recovery()").fetchone()
    assert labels == ["A", "B2"]  # B committed after the target time
    assert in_recovery == (False,)
    restored.remove()


def test_restore_never_goes_over_a_used_directory(platform: LocalCluster, root: Path) -> None:
    used = root / "used"
    used.mkdir()
    (used / "keep.txt").write_text("precious")
    when = datetime.now(UTC)
    with pytest.raises(PitrError, match="not empty"):
        restore_to_time(root / "nowhere", root / "wal", when, used)
    assert (used / "keep.txt").read_text() == "precious"
    with pytest.raises(PitrError, match="running PostgreSQL"):
        restore_to_time(root / "nowhere", root / "wal", when, platform.data_dir, force=True)
    assert platform.is_running()


def test_wal_receiver_streams_segments(platform: LocalCluster, root: Path) -> None:
    receiver = WalReceiver(platform.conn(), root / "received", "eventops_test")
    receiver.start()
    try:
        with platform.conn().connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS streamed (n int)")
            db.execute("INSERT INTO streamed SELECT generate_series(1, 1000)")
            segment = db.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert segment is not None
        wait_for(root / "received" / segment[0])
    finally:
        receiver.stop()
        receiver.drop_slot()
    with platform.conn().connect() as db:
        slots = db.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
    assert slots == (0,)


def make_dump(platform: LocalCluster, root: Path, rows: int) -> Path:
    with platform.conn().connect() as db:
        if not db.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'").fetchone():
            db.execute("CREATE DATABASE shop")
    with platform.conn("shop").connect() as db:
        db.execute("DROP TABLE IF EXISTS t")
        db.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        db.execute("INSERT INTO t SELECT g, 'n' || g FROM generate_series(1, %s) g", (rows,))
    dump = root / f"shop-{rows}.dump"
    run_tool([find_tool("pg_dump", platform.major), "-Fc", "-f", dump], platform.conn("shop"))
    return dump


def add_backup(path: Path, rows: int, snapshot: datetime, encrypted: bool = False) -> int:
    with session_scope() as session:
        backup = Backup(
            kind="daily",
            slot=snapshot,
            state="succeeded",
            started_at=snapshot,
            heartbeat_at=snapshot,
            finished_at=snapshot,
            snapshot_at=snapshot,
            path=str(path),
            size_bytes=path.stat().st_size,
            encrypted=encrypted,
            tables={"public.t": {"rows": rows}},
            verify_state="verified",
        )
        session.add(backup)
        session.flush()
        return backup.id


def test_drill_restores_the_newest_verified_backup(
    clean_db: str, platform: LocalCluster, root: Path
) -> None:
    snapshot = SLOT - timedelta(minutes=10)
    backup_id = add_backup(make_dump(platform, root, 500), 500, snapshot)
    work = root / "drills"
    clock = lambda: SLOT  # noqa: E731

    result = run_drill(session_scope, None, work, SLOT, None, clock)
    assert result["state"] == "passed", result
    assert result["backup_id"] == backup_id and result["rpo_s"] == 600.0
    assert 0 < result["rto_s"] < 60
    assert run_drill(session_scope, None, work, SLOT, None, clock)["skipped"]

    with session_scope() as session:
        run = session.execute(select(RestoreRun)).scalar_one()
    assert (run.kind, run.state, run.backup_id) == ("drill", "passed", backup_id)
    report = (work / "drill-20261127T030000Z.md").read_text()
    assert report == run.report
    assert "PASSED" in report and f"#{backup_id}, daily" in report
    assert "RTO (start to healthy)" in report and "RPO (backup age) | 10 min 00 s" in report
    assert "| public.t | 500 | 500 | ok |" in report
    assert run.target
    data_dir = Path(run.target)
    assert not data_dir.exists() and not postgres_running_on(data_dir)
    assert list(work.iterdir()) == [work / "drill-20261127T030000Z.md"]


def test_drill_fails_when_a_count_differs(
    clean_db: str, platform: LocalCluster, root: Path
) -> None:
    from core.backups.crypto import encrypt_file

    dump = make_dump(platform, root, 300)
    sealed = root / "shop-300.dump.enc"
    encrypt_file(dump, sealed, "drill-key")
    add_backup(sealed, 301, SLOT - timedelta(minutes=5), encrypted=True)  # recorded wrongly

    result = run_drill(session_scope, None, root / "drills2", SLOT, "drill-key", lambda: SLOT)
    assert result["state"] == "failed"
    assert result["failures"] == ["row counts differ: public.t"], result["failures"]
    with session_scope() as session:
        run = session.execute(select(func.count()).select_from(RestoreRun)).scalar_one()
    assert run == 1
    report = (root / "drills2" / "drill-20261127T030000Z.md").read_text()
    assert "FAILED" in report and "| decrypt the backup |" in report
    assert "| public.t | 301 | 300 | **differs** |" in report
    assert not (root / "drills2" / "drill-20261127T030000Z").exists()
