"""The Celery app: queues, routing, and the reliability settings Redis needs."""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from beat_schedule import BEAT_SCHEDULE
from workers.settings import Settings, get_settings

QUEUES = ("probes", "pipeline", "escalations", "slow")

# Longer than the longest task (the slow queue's hard limit is one hour): with Redis, a
# message not acknowledged within this time is delivered again to another worker.
VISIBILITY_TIMEOUT = 2 * 3600

ROUTES = {
    "probes.run_batch": {"queue": "probes"},
    # Control ticks ride the pipeline queue so a probe backlog never delays them.
    "probes.dispatch_due": {"queue": "pipeline"},
    "pipeline.*": {"queue": "pipeline"},
    "rules.*": {"queue": "pipeline"},
    "escalations.*": {"queue": "escalations"},
    # A few seconds of queries: it must not wait behind an hour-long dump.
    "backups.monitor": {"queue": "pipeline"},
    "backups.*": {"queue": "slow"},
    # Seconds-long collectors and heartbeats: never behind a dump or an index rebuild.
    "selfmon.*": {"queue": "pipeline"},
    "metrics.*": {"queue": "pipeline"},
    "security.*": {"queue": "slow"},
    "compliance.*": {"queue": "slow"},
    "maintenance.*": {"queue": "slow"},
    "insight.*": {"queue": "slow"},
    "logs.*": {"queue": "slow"},
    "reports.*": {"queue": "slow"},
}


def celery_config(settings: Settings) -> dict[str, Any]:
    broker = settings.broker_url or "redis://127.0.0.1:6379/0"
    return {
        "broker_url": broker,
        # Results are kept only for tasks a caller waits on (the CLI's `tasks run --wait`).
        "result_backend": broker,
        "result_expires": 24 * 3600,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "task_queues": [Queue(name) for name in QUEUES],
        "task_default_queue": "pipeline",
        "task_routes": ROUTES,
        # Acknowledge after the work is done, and give the message back if the worker
        # dies mid-task; every effect is idempotent, so a second run changes nothing.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message at a time per process: a slow backup never hoards queued work.
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": BEAT_SCHEDULE,
    }


app = Celery(
    "eventops",
    include=[
        "tasks.probes",
        "tasks.pipeline",
        "tasks.escalation",
        "tasks.rules",
        "tasks.backups",
        "tasks.security",
        "tasks.compliance",
        "tasks.maintenance",
        "tasks.retention",
        "tasks.insight",
        "tasks.reports",
    ],
)
app.conf.update(celery_config(get_settings()))

import workers.signals  # noqa: E402,F401  (connects the per-process hooks)
