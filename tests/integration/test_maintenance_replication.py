"""Replication figures from a real primary and a real streaming replica (private servers on
loopback ports, made with initdb and pg_basebackup): the primary counts its replica and its
lag, the replica reports its own replay delay."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.backups.pitr import LocalCluster, _run, hand_over, service_user
from core.maintenance.pg_metrics import postgres_samples

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def primary_and_replica() -> Iterator[tuple[LocalCluster, LocalCluster]]:
    root = Path(tempfile.mkdtemp(prefix="eventops-repl-"))
    hand_over(root)
    primary = LocalCluster.init(root / "primary").start()
    replica = LocalCluster(root / "replica")
    try:
        hand_over(replica.data_dir)
        replica.data_dir.chmod(0o700)
        _run(
            [
                primary.server_tool("pg_basebackup"),
                "-D", replica.data_dir, "-R", "-X", "stream", "-c", "fast",
                "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            ],
            user=service_user(),
            timeout=120,
        )  # fmt: skip
        replica.start()
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()
        shutil.rmtree(root, ignore_errors=True)


def streaming(primary: LocalCluster) -> bool:
    with primary.conn().connect() as db:
        row = db.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
        return row.fetchone() == (1,)


def test_a_replica_is_counted_with_its_lag_and_reports_its_own_delay(
    primary_and_replica: tuple[LocalCluster, LocalCluster],
) -> None:
    primary, replica = primary_and_replica
    deadline = time.monotonic() + 30
    while not streaming(primary):
        assert time.monotonic() < deadline, replica.log_tail()
        time.sleep(0.2)
    with primary.conn().connect() as db:
        db.execute("CREATE TABLE replicated AS SELECT generate_series(1, 100) AS n")
        samples = postgres_samples(db, "platform-db", NOW)
    figures = {(name, subject): value for name, subject, value, _ in samples}
    assert figures[("pg_replicas", "platform-db")] == 1
    lag = [(s, v) for (n, s), v in figures.items() if n == "pg_replication_lag_s"]
    assert len(lag) == 1 and lag[0][0].startswith("platform-db:replica:") and lag[0][1] >= 0
    assert figures[("pg_replication_lag_bytes", lag[0][0])] >= 0

    with replica.conn().connect() as db:
        deadline = time.monotonic() + 30
        while db.execute("SELECT pg_last_xact_replay_timestamp()").fetchone() == (None,):
            assert time.monotonic() < deadline, "the replica replayed nothing"
            time.sleep(0.2)
        on_replica = postgres_samples(db, "platform-db-replica", NOW)
    names = {(name, subject) for name, subject, _, _ in on_replica}
    assert ("pg_replication_lag_s", "platform-db-replica") in names
    assert ("pg_replicas", "platform-db-replica") not in names  # a standby has none of its own
