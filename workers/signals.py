"""Per-process hooks: a forked child gets its own database pool and its own HTTP client."""

from __future__ import annotations

from typing import Any

from celery.signals import beat_init, celeryd_init, worker_process_init, worker_process_shutdown

from models import db
from workers import (  # noqa: F401  (their signals)
    audit_signals,
    logging_setup,
    runtime,
    task_metrics,
)
from workers.observability import init_sentry_from_environment


@celeryd_init.connect
def _sentry_in_worker(**_: Any) -> None:
    init_sentry_from_environment("worker")


@beat_init.connect
def _sentry_in_beat(**_: Any) -> None:
    init_sentry_from_environment("beat")


@worker_process_init.connect
def _fresh_resources_in_child(**_: Any) -> None:
    # Connections inherited through fork are shared with the parent; using them from two
    # processes corrupts the protocol stream.
    db.dispose_after_fork()
    runtime.reset()
    # A fresh Sentry client per child: nothing queued or locked by the parent's sending
    # thread at fork time is inherited.
    init_sentry_from_environment("worker")


@worker_process_shutdown.connect
def _close_resources(**_: Any) -> None:
    runtime.close()


# Self-monitoring: publish stamps (queue lag), worker heartbeats, beat's liveness mark.
import workers.selfmon_signals  # noqa: E402,F401
