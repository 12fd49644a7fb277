"""Infrastructure metrics from real servers: Postgres statistics, the Redis broker, the
rules in config/eventops.yaml alerting on them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from celery import Celery
from sqlalchemy import select

import workers.selfmon_signals  # noqa: F401  (the publish stamp, as in every eventops process)
from core.backups.tools import Conn
from core.maintenance.pg_metrics import collect_postgres, postgres_samples
from core.maintenance.redis_metrics import PUBLISHED_AT_HEADER, queue_figures, redis_samples
from core.metrics import record_metrics
from core.rules import evaluate_rules
from models.config import load_config
from models.db import session_scope
from models.tables import Incident
from workers.app import QUEUES
from workers.embedded import EmbeddedRedis

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def by_name(samples: list[tuple[str, str, float, datetime]]) -> dict[tuple[str, str], float]:
    return {(name, subject): value for name, subject, value, _ in samples}


@pytest.fixture
def lock_wait(clean_db: str) -> Iterator[None]:
    """A transaction holding a row lock and a second session waiting on it, for real."""
    conn = Conn.from_url(clean_db)
    holder = conn.connect(autocommit=False)
    holder.execute("CREATE TABLE IF NOT EXISTS lock_probe (id int primary key)")
    holder.commit()
    holder.execute("INSERT INTO lock_probe VALUES (1) ON CONFLICT DO NOTHING")
    holder.commit()
    holder.execute("SELECT * FROM lock_probe WHERE id = 1 FOR UPDATE")
    waiter = conn.connect(autocommit=True)
    blocked = threading.Thread(
        target=lambda: waiter.execute("UPDATE lock_probe SET id = 1 WHERE id = 1"), daemon=True
    )
    blocked.start()
    with conn.connect() as watcher:
        deadline = time.monotonic() + 10
        while not watcher.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the second session never waited"
            time.sleep(0.05)
    try:
        yield
    finally:
        holder.rollback()
        blocked.join(10)
        holder.execute("DROP TABLE lock_probe")
        holder.commit()
        holder.close()
        waiter.close()


def test_postgres_figures_come_from_the_server_statistics(clean_db: str, lock_wait: None) -> None:
    with Conn.from_url(clean_db).connect() as db:
        db.execute("CREATE TABLE dead_rows AS SELECT g AS id FROM generate_series(1, 2000) g")
        db.execute("DELETE FROM dead_rows WHERE id <= 1500")
        db.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.2)  # the statistics collector's own flush; nothing measures time here
        samples = by_name(postgres_samples(db, "eventops-db", NOW, top_n=50))
        db.execute("DROP TABLE dead_rows")
    assert samples[("pg_connections", "eventops-db")] >= 2
    assert 0 < samples[("pg_connections_ratio", "eventops-db")] < 1
    assert samples[("pg_oldest_xact_age_s", "eventops-db")] > 0  # the lock holder
    assert samples[("pg_lock_waits", "eventops-db")] >= 1
    assert samples[("pg_locks", "eventops-db")] >= samples[("pg_lock_waits", "eventops-db")]
    assert samples[("pg_longest_lock_wait_s", "eventops-db")] >= 0
    # No replicas: said as a count of 0, and no lag figure that could look healthy.
    assert samples[("pg_replicas", "eventops-db")] == 0
    assert not [key for key in samples if key[0] == "pg_replication_lag_s"]
    assert 0 <= samples[("pg_cache_hit_ratio", "eventops-db")] <= 1
    assert samples[("pg_database_bytes", "eventops-db")] > 0
    assert samples[("pg_table_bytes", "eventops-db:public.dead_rows")] > 0
    assert any(name == "pg_index_bytes" for name, _ in samples)
    assert samples[("pg_dead_tuples", "eventops-db:public.dead_rows")] == 1500
    assert samples[("pg_dead_tuple_ratio", "eventops-db:public.dead_rows")] == pytest.approx(0.75)
    assert 0 < samples[("pg_wraparound_headroom", "eventops-db")] <= 1
    assert samples[("pg_xid_age", "eventops-db")] > 0
    assert samples[("pg_xid_age_over_freeze_max", "eventops-db")] > 0


def test_an_unreachable_database_is_a_zero_not_a_crash(clean_db: str) -> None:
    samples, errors = collect_postgres(
        {"eventops-db": clean_db, "platform-db": "postgresql://nobody@127.0.0.1:9/nowhere"},
        NOW,
    )
    figures = by_name(samples)
    assert figures[("pg_reachable", "eventops-db")] == 1
    assert figures[("pg_reachable", "platform-db")] == 0
    assert "platform-db" in errors and "eventops-db" not in errors


def _client_app(broker_url: str) -> Celery:
    return Celery("maintenance-test", broker=broker_url, set_as_current=False)


def test_queue_length_and_the_age_of_the_oldest_waiting_message(clean_redis: str) -> None:
    app = _client_app(clean_redis)
    before = time.time()
    for _ in range(3):
        app.send_task("probes.run_batch", args=[[]], queue="probes")
    app.send_task("rules.evaluate", queue="pipeline")
    client = redis.Redis.from_url(clean_redis)
    # Every published message carries eventops' publish stamp.
    assert PUBLISHED_AT_HEADER.encode() in client.lindex("probes", -1)  # type: ignore[operator]
    later = datetime.fromtimestamp(before + 120, UTC)
    figures = {q.name: q for q in queue_figures(client, QUEUES, later)}
    assert figures["probes"].length == 3
    assert figures["pipeline"].length == 1
    assert figures["probes"].oldest_age_s == pytest.approx(120, abs=5)
    assert (figures["slow"].length, figures["slow"].oldest_age_s) == (0, 0.0)
    samples = by_name(redis_samples(client, QUEUES, later))
    assert samples[("queue_length", "probes")] == 3
    assert samples[("queue_oldest_age_s", "probes")] == pytest.approx(120, abs=5)
    assert samples[("redis_eviction_unsafe", "broker")] in (0.0, 1.0)
    assert samples[("redis_connected_clients", "broker")] >= 1
    assert samples[("redis_used_memory_bytes", "broker")] > 0
    assert ("redis_evicted_keys", "broker") in samples


def test_a_message_without_a_publish_stamp_counts_but_has_no_age(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    client.lpush("slow", b'{"body": "", "headers": {"task": "x"}}')
    (slow,) = queue_figures(client, ["slow"], NOW)
    assert (slow.length, slow.oldest_age_s) == (1, None)


@pytest.fixture
def evicting_redis(tmp_path: Path) -> Iterator[redis.Redis]:
    """A private Redis configured the dangerous way (the shared one is never touched)."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    client.config_set("maxmemory", "64mb")
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        yield client
    finally:
        client.close()
        server.stop()


def test_an_evicting_broker_opens_a_critical_incident_through_the_seed_rules(
    clean_db: str, evicting_redis: redis.Redis, repo_root: Path
) -> None:
    config = load_config(repo_root / "config" / "eventops.yaml")
    samples = redis_samples(evicting_redis, QUEUES, NOW)
    figures = by_name(samples)
    assert figures[("redis_eviction_unsafe", "broker")] == 1
    assert 0 < figures[("redis_memory_ratio", "broker")] < 1
    with session_scope() as session:
        record_metrics(session, samples)
        evaluate_rules(session, config, NOW + timedelta(seconds=1))
    with session_scope() as session:
        incident = session.scalars(
            select(Incident).where(Incident.rule == "redis-eviction-policy")
        ).one()
    assert (incident.severity, incident.subject, incident.status) == ("critical", "broker", "open")
