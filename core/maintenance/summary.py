"""What the dashboard and `eventops maintenance status` show: workers and queues at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from models.maintenance import WorkerHeartbeat
from models.tables import Metric

# A worker refreshes its row every 15 s; three missed beats and it counts as gone.
DEFAULT_WORKER_STALE_AFTER = timedelta(seconds=90)
# Queue figures older than this are not shown as current (the collector runs every 30 s).
QUEUE_FIGURES_FRESH_FOR = timedelta(minutes=5)


def workers_and_queues(
    session: Session,
    now: datetime,
    stale_after: timedelta = DEFAULT_WORKER_STALE_AFTER,
    queue_names: Sequence[str] = (),
) -> dict[str, Any]:
    """{"workers": [{name, last_seen, cpu, memory, disk, alive}], "queues": [{name, length,
    oldest_age_s}]}.

    Workers come from `worker_heartbeats` (each worker reports itself; `alive` is false once
    its last report is older than `stale_after`). Queues come from the newest `queue_length`
    and `queue_oldest_age_s` samples the Redis collector wrote in the last five minutes; a
    queue with no recent figure shows None, not 0. `queue_names` (the Celery app's queues)
    are listed even when no figure arrived.
    """
    workers = [
        {
            "name": row.hostname,
            "last_seen": row.last_seen,
            "cpu": row.cpu,
            "memory": row.memory,
            "disk": row.disk,
            "alive": now - row.last_seen <= stale_after,
        }
        for row in session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.hostname))
    ]
    latest: dict[tuple[str, str], float] = {}
    rows = session.execute(
        select(Metric.name, Metric.subject, Metric.value)
        .where(
            Metric.name.in_(("queue_length", "queue_oldest_age_s")),
            Metric.at > now - QUEUE_FIGURES_FRESH_FOR,
            Metric.at <= now,
        )
        .ext(distinct_on(Metric.name, Metric.subject))
        .order_by(Metric.name, Metric.subject, Metric.at.desc(), Metric.id.desc())
    )
    for name, subject, value in rows:
        latest[(name, subject)] = value
    names = list(queue_names) + sorted({s for _, s in latest} - set(queue_names))
    queues = [
        {
            "name": name,
            "length": _int(latest.get(("queue_length", name))),
            "oldest_age_s": latest.get(("queue_oldest_age_s", name)),
        }
        for name in names
    ]
    return {"workers": workers, "queues": queues}


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
