"""Infrastructure metrics, database maintenance and self-monitoring tasks.

`metrics.*` and `selfmon.*` ride the pipeline queue (seconds long, never behind a dump);
`maintenance.*` reports and fixes ride the slow queue.
"""

from __future__ import annotations

from typing import Any

import redis
from sqlalchemy.exc import DBAPIError

from core.clock import utcnow
from core.maintenance import selfmon
from core.maintenance.jobs import run_report
from core.maintenance.pg_metrics import collect_postgres
from core.maintenance.redis_metrics import queue_figures, redis_samples
from core.metrics import record_metrics
from models import db
from models.db import session_scope
from workers.app import QUEUES, app
from workers.settings import get_config, get_settings

QUICK = {
    "soft_time_limit": 50,
    "time_limit": 60,
    "autoretry_for": (DBAPIError,),
    "retry_backoff": True,
    "max_retries": 2,
}


def database_targets() -> dict[str, str]:
    """The databases the config asks for that have a URL: name -> URL (never logged)."""
    settings = get_settings()
    urls: dict[str, str] = {
        "eventops-db": db.get_engine().url.render_as_string(hide_password=False)
    }
    if settings.platform_database_url is not None:
        urls["platform-db"] = settings.platform_database_url.get_secret_value()
    return {name: urls[name] for name in get_config().maintenance.databases if name in urls}


def broker() -> redis.Redis:
    return redis.Redis.from_url(str(app.conf.broker_url), socket_timeout=10)


@app.task(name="metrics.postgres", **QUICK)
def collect_postgres_metrics() -> dict[str, Any]:
    """Connections, transactions, locks, replication, cache, sizes, dead tuples, wraparound."""
    config = get_config().maintenance
    if not config.enabled:
        return {"skipped": "maintenance is disabled in the config"}
    now = utcnow()
    samples, errors = collect_postgres(database_targets(), now, config.top_n)
    with session_scope() as session:
        written = record_metrics(session, samples)
    return {"samples": written, "unreachable": errors}


@app.task(name="metrics.redis", **QUICK)
def collect_redis_metrics() -> dict[str, Any]:
    """The broker's memory, eviction policy, evictions, clients and queue lengths/lag."""
    if not get_config().maintenance.enabled:
        return {"skipped": "maintenance is disabled in the config"}
    now = utcnow()
    samples = redis_samples(broker(), QUEUES, now)
    with session_scope() as session:
        written = record_metrics(session, samples)
    unsafe = [s for s in samples if s[0] == "redis_eviction_unsafe" and s[2] > 0]
    return {"samples": written, "eviction_unsafe": bool(unsafe)}


@app.task(bind=True, name="selfmon.heartbeat", soft_time_limit=20, time_limit=30)
def heartbeat(self: Any) -> dict[str, Any]:
    """Beat's heartbeat, written by whichever pipeline worker runs it: proof that beat,
    Redis and a worker all work. Records how long the tick waited in the queue."""
    now = utcnow()
    published = (self.request.headers or {}).get("eventops_published_at") if self.request else None
    details: dict[str, Any] = {"worker": self.request.hostname}
    if published is not None:
        details["queued_s"] = round(max(0.0, now.timestamp() - float(published)), 3)
    with session_scope() as session:
        selfmon.stamp(session, selfmon.BEAT, now, details)
    return details


@app.task(name="selfmon.check", **QUICK)
def check() -> dict[str, Any]:
    """Every self-monitoring check: metrics for the rules, then the dead man's switch."""
    config = get_config().maintenance
    now = utcnow()
    try:
        queues = queue_figures(broker(), QUEUES, now)
    except redis.RedisError:
        queues = None  # this task came through Redis, so this is rare; no queue verdicts
    with session_scope() as session:
        verdicts = selfmon.evaluate(session, config, now, queues)
        selfmon.record_verdicts(session, verdicts, now)
    failing = [f"{v.check}:{v.subject}" for v in verdicts if not v.healthy]
    summary: dict[str, Any] = {"checks": len(verdicts), "failing": failing}
    url = get_settings().deadmans_switch_url
    if url is not None:
        ping = selfmon.ping_deadmans_switch(url.get_secret_value(), verdicts)
        with session_scope() as session:
            selfmon.stamp(session, selfmon.DEADMANS_SWITCH, now, ping)
        summary["deadmans_switch"] = ping
    return summary


SLOW = {
    "soft_time_limit": 3300,
    "time_limit": 3600,
    "autoretry_for": (DBAPIError,),
    "retry_backoff": True,
    "max_retries": 2,
}


def _report(kind: str) -> dict[str, Any]:
    config = get_config()
    if not config.maintenance.enabled:
        return {"skipped": "maintenance is disabled in the config"}
    return run_report(
        kind, database_targets(), session_scope, config.maintenance, config.timezone, utcnow()
    )


@app.task(name="maintenance.indexes", **SLOW)
def index_report() -> dict[str, Any]:
    """Weekly: unused, duplicate, invalid and bloated indexes, unindexed foreign keys."""
    return _report("indexes")


@app.task(name="maintenance.queries", **SLOW)
def query_report() -> dict[str, Any]:
    """Weekly: top queries and regressions from pg_stat_statements (or why it is off)."""
    return _report("queries")


@app.task(name="maintenance.vacuum", **SLOW)
def vacuum_report() -> dict[str, Any]:
    """Daily: tables whose dead tuples or stale statistics call for VACUUM or ANALYZE."""
    return _report("vacuum")
