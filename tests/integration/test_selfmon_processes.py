"""A stopped worker and a stopped beat are detected: real `eventops worker` and `eventops
beat` processes on the test's Postgres and Redis leave their marks, are stopped, and the
checks turn failing at an injected `now` past their limits. While they run, the dead man's
switch gets its healthy ping from the real selfmon.check task."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from core.clock import utcnow
from core.maintenance import selfmon
from core.maintenance.summary import workers_and_queues
from models.config_maintenance import MaintenanceConfig
from models.db import session_scope
from models.maintenance import SelfmonMark, WorkerHeartbeat
from models.tables import Metric
from tests.faults.harness import Cluster, base_env, wait_for
from tests.integration.test_selfmon import PingReceiver

CONFIG = MaintenanceConfig(worker_heartbeat_every=timedelta(seconds=1))


@pytest.fixture
def procs(
    clean_db: str, clean_redis: str, tmp_path: Path
) -> Iterator[tuple[Cluster, PingReceiver]]:
    config = tmp_path / "eventops.yaml"
    config.write_text(
        yaml.safe_dump(
            {"platform_url": "http://127.0.0.1:9", "maintenance": {"worker_heartbeat_every": "1s"}}
        )
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    with PingReceiver() as receiver:
        env = base_env(clean_db, clean_redis, config, tmp_path / "var")
        env["EVENTOPS_DEADMANS_SWITCH_URL"] = receiver.url
        cluster = Cluster(env, logs)
        try:
            yield cluster, receiver
        except BaseException:
            print(cluster.tails())
            raise
        finally:
            cluster.stop()


def mark(source: str) -> SelfmonMark | None:
    with session_scope() as session:
        return session.get(SelfmonMark, source)


def worker_row() -> WorkerHeartbeat | None:
    with session_scope() as session:
        return session.scalars(select(WorkerHeartbeat)).first()


def queue_figures_written() -> bool:
    with session_scope() as session:
        return bool(
            session.scalars(select(Metric.subject).where(Metric.name == "queue_length")).all()
        )


def failing_at(now_offset: timedelta, base: object) -> set[tuple[str, str]]:
    assert hasattr(base, "last_seen")
    with session_scope() as session:
        verdicts = selfmon.evaluate(session, CONFIG, base.last_seen + now_offset)
    return {(v.check, v.subject) for v in verdicts if not v.healthy}


def test_a_stopped_beat_and_a_stopped_worker_are_each_detected(
    procs: tuple[Cluster, PingReceiver],
) -> None:
    cluster, receiver = procs
    cluster.start("worker", "worker", "-c", "1", "-n", "w1@%h")
    cluster.start("beat", "beat")

    # The worker reports its own host; beat's heartbeat runs on it; beat marks itself.
    row = wait_for("the worker's heartbeat", worker_row, timeout=60)
    assert row is not None and row.memory is not None and row.disk is not None
    assert row.hostname.startswith("w1@") and 0 <= row.memory <= 1 and 0 <= row.disk <= 1
    with session_scope() as session:
        names = set(
            session.scalars(select(Metric.name).where(Metric.subject == row.hostname)).all()
        )
    assert {"cpu_usage", "memory_usage", "disk_usage"} <= names
    wait_for("beat's in-process mark", lambda: mark(selfmon.BEAT_PROCESS), timeout=60)
    beat_mark = wait_for("the heartbeat task's mark", lambda: mark(selfmon.BEAT), timeout=60)
    # The publish stamp travelled with the tick: the mark says how long it queued.
    assert (
        beat_mark is not None
        and beat_mark.details["queued_s"] >= 0
        and beat_mark.details["worker"] == row.hostname
    )
    # selfmon.check runs 30 s after beat starts: everything is healthy, so a plain ping.
    wait_for("a dead man's switch ping", lambda: receiver.pings, timeout=90)
    assert receiver.pings[0][0] == "/ping/5f1c-uuid", receiver.pings[0][1]
    # The broker collector ran on the real worker too (same 30 s tick).
    wait_for("queue figures from metrics.redis", queue_figures_written, timeout=60)
    with session_scope() as session:
        summary = workers_and_queues(session, utcnow())
    assert [(w["name"], w["alive"]) for w in summary["workers"]] == [(row.hostname, True)]

    # Stop beat: the worker keeps reporting, beat's marks stop.
    cluster.terminate("beat")
    beat = mark(selfmon.BEAT)
    assert beat is not None
    assert failing_at(timedelta(seconds=30), beat) == set()
    assert ("beat", "beat") in failing_at(timedelta(seconds=61), beat)
    pings = len(receiver.pings)

    # Stop the worker: its row stops moving, and past the limit it is missing.
    cluster.terminate("worker")
    last = worker_row()
    assert last is not None
    assert ("worker", last.hostname) not in failing_at(timedelta(seconds=89), last)
    assert {("worker", last.hostname), ("worker", "any")} <= failing_at(timedelta(seconds=91), last)
    with session_scope() as session:
        later = workers_and_queues(session, last.last_seen + timedelta(seconds=91))
    assert [(w["name"], w["alive"]) for w in later["workers"]] == [(last.hostname, False)]
    # With eventops down, nothing pings the switch any more: that is what pages.
    assert len(receiver.pings) == pings
