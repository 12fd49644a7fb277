"""Task durations, task states and outcome counts, aggregated in Redis by every worker process.

Each worker process adds its finished tasks into a few Redis hashes (one round trip per
task); /metrics (web/metrics.py) reads the hashes at scrape time. So the numbers are the
same whichever process serves /metrics, however many worker processes there are, and a
worker restart loses nothing. A flushed Redis resets them, which Prometheus reads as a
counter reset (rate() and increase() handle it).

The queue lag /metrics reports comes from the publish stamp workers/selfmon_signals.py puts
on every task message (core/maintenance/redis_metrics.py reads it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from celery.signals import task_postrun, task_prerun

log = logging.getLogger(__name__)

TASK_KEY_PREFIX = "eventops:metrics:task:"
TASK_NAMES_KEY = "eventops:metrics:tasks"
OUTCOMES_KEY = "eventops:metrics:outcomes"

# Upper bounds in seconds: from a 50 ms tick to an hour-long dump.
DURATION_BUCKETS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

_started: dict[str, float] = {}
_client: redis.Redis | None = None
_client_url: str | None = None


def bucket_field(seconds: float) -> str:
    """The hash field of the smallest bucket holding `seconds` (`le:+Inf` past the last)."""
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return f"le:{bound:g}"
    return "le:+Inf"


def record_task(client: redis.Redis, name: str, seconds: float, state: str | None) -> None:
    """Add one finished task to its hash: count, sum, its bucket and its final state."""
    key = TASK_KEY_PREFIX + name
    pipe = client.pipeline(transaction=False)
    pipe.sadd(TASK_NAMES_KEY, name)
    pipe.hincrby(key, "count", 1)
    pipe.hincrbyfloat(key, "sum", seconds)
    pipe.hincrby(key, bucket_field(seconds), 1)
    pipe.hincrby(key, f"state:{(state or 'UNKNOWN').lower()}", 1)
    pipe.execute()


def record_outcomes(client: redis.Redis, summary: Any) -> None:
    """Count a probe batch's outcomes by status from the task's JSON summary."""
    if not isinstance(summary, dict) or "down" not in summary:
        return
    probed, down = int(summary.get("probed", 0)), int(summary.get("down", 0))
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(OUTCOMES_KEY, "up", probed - down)
    pipe.hincrby(OUTCOMES_KEY, "down", down)
    pipe.execute()


def _redis() -> redis.Redis | None:
    global _client, _client_url
    from workers.app import app

    url = app.conf.broker_url
    if not url:
        return None
    if _client is None or _client_url != url:
        _client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        _client_url = url
    return _client


@task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(
    task_id: str | None = None,
    task: Any = None,
    retval: Any = None,
    state: str | None = None,
    **_: Any,
) -> None:
    started = _started.pop(task_id or "", None)
    if started is None or task is None:
        return
    seconds = time.perf_counter() - started
    try:
        client = _redis()
        if client is None:
            return
        record_task(client, task.name, seconds, state)
        if task.name == "probes.run_batch" and state == "SUCCESS":
            record_outcomes(client, retval)
    except redis.RedisError as error:
        # Metrics are a courtesy: a Redis hiccup must never fail the task that just ran.
        log.warning("could not record task metrics for %s: %s", task.name, error)
