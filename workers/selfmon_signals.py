"""Process hooks of self-monitoring: publish stamps for queue lag, each worker's own
heartbeat thread, and beat's in-process liveness mark (docs/maintenance.md)."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from celery.signals import beat_init, before_task_publish, worker_ready, worker_shutdown

from core.clock import utcnow
from core.maintenance.host_metrics import WorkerHeartbeatThread
from core.maintenance.redis_metrics import PUBLISHED_AT_HEADER
from core.maintenance.selfmon import BEAT_PROCESS, MarkThread
from models.db import session_scope

log = logging.getLogger(__name__)

BEAT_PROCESS_MARK_EVERY_S = 15.0
_threads: list[WorkerHeartbeatThread | MarkThread] = []


@before_task_publish.connect
def _stamp_publish_time(headers: dict[str, Any] | None = None, **_: Any) -> None:
    # Celery's message carries no publish time; the queue-lag collector reads this one
    # from the oldest waiting message.
    if headers is not None:
        headers.setdefault(PUBLISHED_AT_HEADER, time.time())


def _heartbeat_settings() -> tuple[float, Path]:
    """The heartbeat interval and the disk to watch; defaults if the config is unreadable
    (a worker keeps reporting itself even then)."""
    every, disk = 15.0, Path("/")
    with contextlib.suppress(Exception):
        from workers.settings import get_config, get_settings

        every = get_config().maintenance.worker_heartbeat_every.total_seconds()
        var_dir = get_settings().var_dir
        disk = var_dir if var_dir.exists() else disk
    return every, disk


@worker_ready.connect
def _start_worker_heartbeat(sender: Any = None, **_: Any) -> None:
    # In the worker's main process: one heartbeat per worker node, alive as long as the
    # node is, whatever its pool children do.
    from datetime import timedelta

    every, disk = _heartbeat_settings()
    queues: list[str] = []
    with contextlib.suppress(Exception):
        queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    hostname = getattr(sender, "hostname", None) or "worker"
    thread = WorkerHeartbeatThread(
        session_scope, hostname, timedelta(seconds=every), disk_path=disk, queues=queues
    )
    _threads.append(thread.start())
    log.info("worker heartbeat for %s every %.0f s", hostname, every)


@worker_shutdown.connect
def _stop_threads(**_: Any) -> None:
    while _threads:
        _threads.pop().stop()


@beat_init.connect
def _start_beat_process_mark(**_: Any) -> None:
    _threads.append(
        MarkThread(session_scope, BEAT_PROCESS, BEAT_PROCESS_MARK_EVERY_S, utcnow).start()
    )
