"""The broker's health as metrics: memory, eviction policy, evictions, clients, queues.

Celery's Redis transport keeps each queue as a list: new messages are LPUSHed at the head
and workers BRPOP from the tail, so the oldest waiting message is `LINDEX queue -1`.
Priorities other than the default live in sibling lists named `<queue>\\x06\\x16<priority>`.
Celery's message has no publish time of its own: eventops stamps one in a
`before_task_publish` handler (header `eventops_published_at`, epoch seconds) so the queue
lag can be read from the oldest message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

PUBLISHED_AT_HEADER = "eventops_published_at"
# kombu.transport.redis: Channel.sep and PRIORITY_STEPS (priority 0 is the bare name).
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
SUBJECT = "broker"


@dataclass(frozen=True)
class QueueFigures:
    name: str
    length: int
    oldest_age_s: float | None  # None: a message without our publish stamp is the oldest


def _priority_lists(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def published_at(raw: bytes | str | None) -> float | None:
    """The publish time stamped in a raw kombu message, or None."""
    if raw is None:
        return None
    try:
        message = json.loads(raw)
        value = message.get("headers", {}).get(PUBLISHED_AT_HEADER)
        return None if value is None else float(value)
    except (ValueError, TypeError, AttributeError):
        return None


def queue_figures(client: redis.Redis, queues: Iterable[str], now: datetime) -> list[QueueFigures]:
    """Length of each queue (all its priority lists) and the age of its oldest message."""
    figures = []
    for queue in queues:
        lists = _priority_lists(queue)
        with client.pipeline(transaction=False) as pipe:
            for name in lists:
                pipe.llen(name)
                pipe.lindex(name, -1)
            replies = pipe.execute()
        length = sum(int(n) for n in replies[0::2])
        stamps = [published_at(raw) for raw in replies[1::2] if raw is not None]
        age: float | None = 0.0
        if stamps:
            known = [s for s in stamps if s is not None]
            age = max(0.0, now.timestamp() - min(known)) if known else None
        figures.append(QueueFigures(queue, length, age))
    return figures


def redis_samples(
    client: redis.Redis, queues: Iterable[str], now: datetime
) -> list[tuple[str, str, float, datetime]]:
    """Every broker figure as (name, subject, value, at) for core.metrics.record_metrics.

    - `redis_used_memory_bytes`; `redis_memory_ratio` (used / maxmemory, only when a
      maxmemory is set: without one Redis grows until the host runs out).
    - `redis_eviction_unsafe`: 1 when maxmemory-policy is not `noeviction` (Redis would
      silently drop queued tasks under memory pressure), else 0.
    - `redis_evicted_keys` (a counter since the server started), `redis_connected_clients`.
    - per queue (subject: the queue's name): `queue_length`, `queue_oldest_age_s`.
    """
    info: dict[str, Any] = client.info()
    samples: list[tuple[str, str, float, datetime]] = [
        ("redis_used_memory_bytes", SUBJECT, float(info["used_memory"]), now),
        ("redis_evicted_keys", SUBJECT, float(info.get("evicted_keys", 0)), now),
        ("redis_connected_clients", SUBJECT, float(info.get("connected_clients", 0)), now),
    ]
    policy = str(info.get("maxmemory_policy", "noeviction"))
    samples.append(("redis_eviction_unsafe", SUBJECT, float(policy != "noeviction"), now))
    maxmemory = int(info.get("maxmemory", 0))
    if maxmemory > 0:
        samples.append(("redis_memory_ratio", SUBJECT, info["used_memory"] / maxmemory, now))
    for queue in queue_figures(client, queues, now):
        samples.append(("queue_length", queue.name, float(queue.length), now))
        if queue.oldest_age_s is not None:
            samples.append(("queue_oldest_age_s", queue.name, queue.oldest_age_s, now))
    return samples


def eviction_policy(client: redis.Redis) -> str:
    return str(client.config_get("maxmemory-policy").get("maxmemory-policy", "unknown"))
