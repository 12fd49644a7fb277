"""Per-process hooks: a forked child gets its own database pool and its own HTTP client."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown

from models import db
from workers import runtime


@worker_process_init.connect
def _fresh_resources_in_child(**_: Any) -> None:
    # Connections inherited through fork are shared with the parent; using them from two
    # processes corrupts the protocol stream.
    db.dispose_after_fork()
    runtime.reset()


@worker_process_shutdown.connect
def _close_resources(**_: Any) -> None:
    runtime.close()
