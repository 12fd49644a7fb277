"""Each worker reports its own host: CPU, memory and disk from psutil, every few seconds.

A periodic task on a shared queue runs on whichever worker takes it first, so it cannot
measure every host; instead a thread in each worker's main process writes that worker's
row in `worker_heartbeats` (and `cpu_usage`, `memory_usage`, `disk_usage` samples, subject
the worker's node name). A worker that dies stops writing: its row goes stale and it shows
as missing, never as healthy with old figures.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psutil
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.metrics import record_metrics
from models.maintenance import WorkerHeartbeat

log = logging.getLogger(__name__)

SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class HostSample:
    cpu: float  # fractions of 1
    memory: float
    disk: float


def sample_host(disk_path: Path | str = "/") -> HostSample:
    """CPU since the previous call (the first call primes psutil and reads 0), memory in
    use, and the disk holding `disk_path`."""
    return HostSample(
        cpu=psutil.cpu_percent(interval=None) / 100.0,
        memory=psutil.virtual_memory().percent / 100.0,
        disk=psutil.disk_usage(str(disk_path)).percent / 100.0,
    )


def record_heartbeat(
    session: Session,
    hostname: str,
    sample: HostSample,
    now: datetime,
    *,
    pid: int | None = None,
    started_at: datetime | None = None,
    queues: list[str] | None = None,
) -> None:
    """Upsert the worker's row and write its three host metrics."""
    values = {
        "hostname": hostname,
        "pid": pid if pid is not None else os.getpid(),
        "started_at": started_at or now,
        "last_seen": now,
        "cpu": sample.cpu,
        "memory": sample.memory,
        "disk": sample.disk,
        "queues": queues,
    }
    statement = insert(WorkerHeartbeat).values(**values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[WorkerHeartbeat.hostname],
            set_={k: statement.excluded[k] for k in values if k != "hostname"},
        )
    )
    record_metrics(
        session,
        [
            ("cpu_usage", hostname, sample.cpu, now),
            ("memory_usage", hostname, sample.memory, now),
            ("disk_usage", hostname, sample.disk, now),
        ],
    )


class WorkerHeartbeatThread:
    """Writes this worker's heartbeat every `every` until stopped. A failed write (Postgres
    down) is logged and retried at the next beat: the thread never dies of it."""

    def __init__(
        self,
        sessions: SessionFactory,
        hostname: str,
        every: timedelta,
        *,
        disk_path: Path | str = "/",
        queues: list[str] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions, self.hostname, self.every = sessions, hostname, every
        self.disk_path, self.queues, self.clock = disk_path, queues, clock
        self.started_at = clock()
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="eventops-worker-heartbeat", daemon=True
        )

    def start(self) -> WorkerHeartbeatThread:
        psutil.cpu_percent(interval=None)  # prime: the next reading covers the interval
        self._thread.start()
        return self

    def beat_once(self) -> None:
        sample = sample_host(self.disk_path)
        with self.sessions() as session:
            record_heartbeat(
                session,
                self.hostname,
                sample,
                self.clock(),
                pid=self.pid,
                started_at=self.started_at,
                queues=self.queues,
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat_once()
            except Exception:  # the next beat retries; the thread must live
                log.warning("worker heartbeat failed", exc_info=True)
            self._stop.wait(self.every.total_seconds())

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
