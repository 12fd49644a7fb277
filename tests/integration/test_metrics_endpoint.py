"""/metrics under a real uvicorn, scraped over HTTP and parsed as Prometheus would."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import text

from core.incidents import Problem, raise_problem
from core.pipeline import record_outcomes
from core.probing import ProbeResult
from core.schedule import sync_checks
from models.db import get_engine, session_scope
from tests.conftest import make_config
from tests.processes import running_worker, serving, wait_for
from web.metrics import EventopsCollector, metrics_settings, router
from workers.app import QUEUES
from workers.settings import Settings
from workers.task_metrics import record_task

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = httpx.get(f"{base}/metrics", headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return parse(reply.text)


def parse(exposition: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


def series(samples: Samples, metric: str) -> list[dict[str, str]]:
    return [dict(labels) for sample_name, labels in samples if sample_name == metric]


def app_with(settings: Settings) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[metrics_settings] = lambda: settings
    return app


@pytest.fixture
def metrics_url(clean_db: str, clean_redis: str) -> Iterator[str]:
    with serving(app_with(Settings(broker_url=clean_redis))) as base:
        yield base


def config_with_three_checks():  # type: ignore[no-untyped-def]
    checks = [
        {"name": name, "url": f"http://127.0.0.1:9/{name}", "interval": "1m", "timeout": "2s"}
        for name in ("api", "db", "web")
    ]
    checks[1]["group"] = "data"
    return make_config(checks=checks)


def outcome(check_id: int, status: str, latency_ms: float, slot: datetime) -> ProbeResult:
    return ProbeResult(
        check_id=check_id,
        slot=slot,
        observed_at=slot + timedelta(seconds=1),
        status=status,
        latency_ms=latency_ms,
        http_status=200 if status == "up" else 503,
        reason=None if status == "up" else "bad_status",
    )


def test_check_states_latencies_and_open_incidents_are_exported(metrics_url: str) -> None:
    config = config_with_three_checks()
    with session_scope() as session:
        sync_checks(session, config, now=NOW)
        ids = dict(session.execute(text("SELECT name, id FROM checks")).all())
        summary = record_outcomes(
            session,
            [outcome(ids["api"], "up", 120.0, NOW), outcome(ids["db"], "down", 40.0, NOW)],
            config,
            now=NOW,
        )
    assert len(summary.opened) == 1

    samples = scrape(metrics_url)

    assert value(samples, "eventops_database_up") == 1
    assert value(samples, "eventops_redis_up") == 1
    assert value(samples, "eventops_checks", state="up") == 1
    assert value(samples, "eventops_checks", state="down") == 1
    assert value(samples, "eventops_checks", state="unknown") == 1
    assert value(samples, "eventops_checks_by_group", group="data", state="down") == 1
    assert value(samples, "eventops_check_status", name="db", group="data", state="down") == 1
    assert value(samples, "eventops_check_status", name="web", group="web", state="unknown") == 1
    assert value(samples, "eventops_check_up", name="api", group="api") == 1
    assert value(samples, "eventops_check_up", name="db", group="data") == 0
    assert {"name": "web", "group": "web"} not in series(samples, "eventops_check_up")
    assert value(samples, "eventops_check_latency_seconds", name="api", group="api") == 0.12
    assert value(samples, "eventops_check_consecutive_failures", name="db", group="data") == 1
    assert (
        value(samples, "eventops_check_last_checked_timestamp_seconds", name="api", group="api")
        == (NOW + timedelta(seconds=1)).timestamp()
    )
    assert value(samples, "eventops_incidents_open", severity="critical", state="open") == 1
    assert value(samples, "eventops_incidents_open", severity="warning", state="open") == 0
    assert value(samples, "eventops_incidents_total", severity="critical") == 1
    assert value(samples, "eventops_check_series_truncated") == 0


def test_acknowledged_incidents_move_to_the_acknowledged_series(metrics_url: str) -> None:
    from core.incidents import acknowledge

    config = make_config()
    with session_scope() as session:
        incident_id = raise_problem(
            session,
            Problem(
                fingerprint="rule:disk",
                title="disk filling",
                severity="warning",
                summary="disk 91%",
                labels={"group": "infra"},
            ),
            config,
            NOW,
        )
    assert incident_id is not None
    acknowledge(incident_id, by="ana")
    samples = scrape(metrics_url)
    assert value(samples, "eventops_incidents_open", severity="warning", state="open") == 0
    assert value(samples, "eventops_incidents_open", severity="warning", state="acknowledged") == 1


def test_queue_lengths_and_the_age_of_the_oldest_message(
    metrics_url: str, clean_redis: str
) -> None:
    with Celery(broker=clean_redis) as sender:
        for _ in range(3):
            sender.send_task("escalations.sweep", queue="escalations")
        sender.send_task("backups.dump", queue="slow", priority=9)

    samples = scrape(metrics_url)
    assert value(samples, "eventops_queue_length", queue="escalations") == 3
    assert value(samples, "eventops_queue_length", queue="slow") == 1
    assert value(samples, "eventops_queue_length", queue="probes") == 0
    assert value(samples, "eventops_queue_lag_seconds", queue="probes") == 0

    # The lag is read from the time stamped on the message when it was published.
    collector = EventopsCollector(
        session_scope,
        redis.Redis.from_url(clean_redis),
        QUEUES,
        check_series_limit=10,
        now=lambda: time.time() + 3600,
    )
    later = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in collector.collect()
        for s in family.samples
    }
    assert 3600 <= value(later, "eventops_queue_lag_seconds", queue="escalations") < 3700
    assert 3600 <= value(later, "eventops_queue_lag_seconds", queue="slow") < 3700
    assert value(later, "eventops_queue_lag_seconds", queue="probes") == 0


def test_task_durations_from_several_processes_add_up_into_one_histogram(
    metrics_url: str, clean_redis: str
) -> None:
    # Two clients stand for two worker processes writing the same Redis hashes.
    first, second = redis.Redis.from_url(clean_redis), redis.Redis.from_url(clean_redis)
    record_task(first, "probes.run_batch", 0.08, "SUCCESS")
    record_task(second, "probes.run_batch", 0.4, "SUCCESS")
    record_task(second, "probes.run_batch", 7200.0, "FAILURE")
    record_task(first, "escalations.sweep", 0.01, "SUCCESS")

    samples = scrape(metrics_url)
    task = {"task": "probes.run_batch"}
    assert value(samples, "eventops_task_duration_seconds_count", **task) == 3
    assert value(samples, "eventops_task_duration_seconds_sum", **task) == pytest.approx(7200.48)
    assert value(samples, "eventops_task_duration_seconds_bucket", le="0.05", **task) == 0
    assert value(samples, "eventops_task_duration_seconds_bucket", le="0.1", **task) == 1
    assert value(samples, "eventops_task_duration_seconds_bucket", le="0.5", **task) == 2
    assert value(samples, "eventops_task_duration_seconds_bucket", le="3600.0", **task) == 2
    assert value(samples, "eventops_task_duration_seconds_bucket", le="+Inf", **task) == 3
    assert value(samples, "eventops_tasks_total", state="success", **task) == 2
    assert value(samples, "eventops_tasks_total", state="failure", **task) == 1
    assert value(samples, "eventops_tasks_total", task="escalations.sweep", state="success") == 1


def test_a_real_worker_reports_its_task_durations_and_probe_outcomes(
    clean_db: str, clean_redis: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "eventops.yaml"
    config_file.write_text(
        "platform_url: http://127.0.0.1:9\n"
        "network:\n  allow_internal: [127.0.0.0/8]\n"
        "checks:\n"
        "  - {name: api, url: 'http://127.0.0.1:9/health', interval: 1h, timeout: 2s}\n"
    )
    from models.config import load_config

    with session_scope() as session:
        sync_checks(session, load_config(config_file), now=NOW)
    env = {
        **os.environ,
        "EVENTOPS_DATABASE_URL": clean_db,
        "EVENTOPS_BROKER_URL": clean_redis,
        "EVENTOPS_CONFIG_FILE": str(config_file),
        "EVENTOPS_VAR_DIR": str(tmp_path / "var"),
    }
    client = redis.Redis.from_url(clean_redis)
    with running_worker(env, tmp_path / "worker.log"):
        with Celery(broker=clean_redis) as sender:
            sender.send_task("probes.dispatch_due", queue="pipeline")
        wait_for(
            lambda: client.hget("eventops:metrics:task:probes.run_batch", "count"),
            60,
            "the probe batch to finish",
        )

    with serving(app_with(Settings(broker_url=clean_redis))) as base:
        samples = scrape(base)
    for task in ("probes.dispatch_due", "probes.run_batch"):
        assert value(samples, "eventops_task_duration_seconds_count", task=task) == 1
        assert value(samples, "eventops_tasks_total", task=task, state="success") == 1
    # Port 9 refuses connections: the one probe was a `down` outcome.
    assert value(samples, "eventops_outcomes_total", status="down") == 1
    assert value(samples, "eventops_outcomes_total", status="up") == 0
    assert value(samples, "eventops_check_up", name="api", group="api") == 0


def test_per_check_series_stop_at_the_limit_with_troubled_checks_first(
    clean_db: str, clean_redis: str
) -> None:
    with get_engine().begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO checks (name, kind, url, method, expected_status, interval_s,
                    timeout_s, max_body_bytes, alert_threshold, recovery_threshold, severity,
                    enabled, group_name, depends_on, category, next_due_at, dispatch_attempts,
                    status, consecutive_failures, consecutive_successes)
                SELECT 'check-' || lpad(n::text, 5, '0'), 'http', 'http://127.0.0.1:9/', 'GET',
                    '[200]', 60, 5, 1024, 1, 2, 'critical', true, 'group-' || (n % 7), '[]',
                    'availability', now(), 0,
                    CASE WHEN n % 1000 = 999 THEN 'down' ELSE 'up' END, 0, 0
                FROM generate_series(0, 4999) AS n
                """
            )
        )
    settings = Settings(broker_url=clean_redis, metrics_check_series_limit=20)
    with serving(app_with(settings)) as base:
        samples = scrape(base)

    assert value(samples, "eventops_checks", state="up") == 4995
    assert value(samples, "eventops_checks", state="down") == 5
    assert (
        sum(
            value(samples, "eventops_checks_by_group", **labels)
            for labels in series(samples, "eventops_checks_by_group")
        )
        == 5000
    )
    exported = series(samples, "eventops_check_status")
    assert len(exported) == 20
    assert sum(labels["state"] == "down" for labels in exported) == 5
    assert value(samples, "eventops_check_series_truncated") == 1


def test_a_token_is_required_when_one_is_set(clean_db: str, clean_redis: str) -> None:
    settings = Settings(broker_url=clean_redis, metrics_token=SecretStr("s3cret-token"))
    with serving(app_with(settings)) as base:
        bare = httpx.get(f"{base}/metrics")
        wrong = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer nope"})
        assert bare.status_code == 401 and wrong.status_code == 401
        assert bare.headers["www-authenticate"].startswith("Bearer")
        assert "eventops_checks" not in bare.text
        assert value(scrape(base, "s3cret-token"), "eventops_database_up") == 1


def test_an_unreachable_redis_still_serves_the_postgres_metrics(clean_db: str) -> None:
    settings = Settings(broker_url="redis://127.0.0.1:9/0")
    with serving(app_with(settings)) as base:
        samples = scrape(base)
    assert value(samples, "eventops_redis_up") == 0
    assert value(samples, "eventops_database_up") == 1
    assert ("eventops_queue_length", frozenset({("queue", "probes")})) not in samples


def test_the_dashboard_app_serves_metrics_without_a_dashboard_login(
    clean_db: str, clean_redis: str, tmp_path: Path
) -> None:
    from web.app import create_app

    settings = Settings(
        broker_url=clean_redis,
        database_url=clean_db,
        var_dir=tmp_path / "var",
        metrics_token=SecretStr("scrape-me"),
    )
    with serving(create_app(settings, make_config())) as base:
        # The dashboard's pages want a session; /metrics wants only its bearer token.
        assert httpx.get(f"{base}/metrics").status_code == 401
        samples = scrape(base, "scrape-me")
    assert value(samples, "eventops_database_up") == 1
