"""Audit the config file when a worker starts (the periodic `compliance.config_check` catches
changes between starts). A failure here never stops the worker: it is logged, and the next
periodic check records the change."""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery.signals import worker_ready

log = logging.getLogger(__name__)


@worker_ready.connect
def _audit_config_at_start(**_: Any) -> None:
    try:
        from core.audit import record_config
        from models.db import session_scope
        from workers.settings import get_settings

        with session_scope() as session:
            record_config(session, get_settings().config_file, f"worker@{socket.gethostname()}")
    except Exception:
        log.warning("could not audit the config file at worker start", exc_info=True)
