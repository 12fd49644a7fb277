"""The insight tasks in a real worker process: sent through real Redis, run against real
Postgres and the demo platform database, a slow page ending as an incident."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import select

from beat_schedule import BEAT_SCHEDULE
from core.backups.tools import Conn
from core.clock import utcnow
from core.insight.vitals import Beacon, store_beacons
from demo import platform_db
from models.db import session_scope
from models.tables import Incident
from tests.insight_helpers import platform_database

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
INSIGHT_ENTRIES = (
    "insight-kpis",
    "insight-vitals",
    "insight-analytics",
    "insight-experiments",
    "insight-prune",
)

CONFIG = """
platform_url: http://127.0.0.1:9
rules:
  - name: lcp-poor
    metric: vitals.lcp.p75
    aggregate: last
    window: 10m
    op: ">="
    threshold: 2500
    severity: warning
insight:
  vitals: {window: 1h, min_samples: 20}
  kpis:
    - name: successfulBookings
      target: 50
      prorate: true
      sql: >-
        SELECT count(*) FROM bookings
        WHERE status IN ('confirmed', 'completed') AND created_at >= :start AND created_at < :end
  counters:
    - name: bookings
      sql: SELECT count(*) FROM bookings WHERE created_at >= :start AND created_at < :end
  funnels:
    - name: booking
      steps: [search, vendor_view, booking_start, checkout, booking_complete]
  experiments:
    - name: checkout-button
      variants: {control: 0.5, treatment: 0.5}
"""


@pytest.fixture(scope="module")
def demo_platform(postgres_server_url: str) -> Iterator[str]:
    with platform_database(postgres_server_url) as url:
        platform_db.generate(Conn.from_url(url), scale=0.1, seed=3, days=30, now=datetime.now(UTC))
        yield url


def run(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_insight_tasks_run_in_a_real_worker_and_a_slow_page_opens_an_incident(
    clean_db: str, clean_redis: str, demo_platform: str, tmp_path: Path
) -> None:
    config = tmp_path / "eventops.yaml"
    config.write_text(CONFIG)
    env = {
        **os.environ,
        "EVENTOPS_DATABASE_URL": clean_db,
        "EVENTOPS_BROKER_URL": clean_redis,
        "EVENTOPS_PLATFORM_DATABASE_URL": demo_platform,
        "EVENTOPS_CONFIG_FILE": str(config),
        "EVENTOPS_VAR_DIR": str(tmp_path / "var"),
    }
    now = utcnow()
    with session_scope() as session:
        store_beacons(
            session,
            [
                Beacon.model_validate(
                    {
                        "name": "LCP",
                        "value": 2000 + 100 * i,
                        "id": f"lcp-{i}",
                        "page": "/vendors",
                        "device": "mobile",
                    }
                )
                for i in range(25)
            ],
            now,
        )
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 (owned by the child)
    worker = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "-c", "2", "-n", "insight-e2e@%h"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # A plain client, as beat is one: send by name to the queues beat_schedule names.
    client = Celery(broker=clean_redis, backend=clean_redis)
    try:

        def send(entry: str) -> Any:
            scheduled = BEAT_SCHEDULE[entry]
            return client.send_task(
                scheduled["task"], queue=scheduled["options"]["queue"], ignore_result=False
            )

        sent = {entry: send(entry) for entry in INSIGHT_ENTRIES}
        results = {entry: result.get(timeout=300) for entry, result in sent.items()}
        evaluation = client.send_task("rules.evaluate", queue="pipeline", ignore_result=False)
        evaluation.get(timeout=120)
        table = run(env, "insight", "kpis")
    except Exception as error:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        tail = (tmp_path / "worker.log").read_text(errors="replace")[-4000:]
        raise AssertionError(f"{error!r}\n--- worker log\n{tail}") from None
    finally:
        client.close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        log.close()

    kpis, vitals = results["insight-kpis"], results["insight-vitals"]
    analytics, experiments = results["insight-analytics"], results["insight-experiments"]
    assert kpis["failed"] == {} and kpis["kpis"]["successfulBookings"]["value"] > 0
    assert kpis["counter_samples"] == 24
    # p75 of 2000..4400 step 100 is 3800 ms: poor.
    assert vitals["poor"] == ["LCP /vendors|mobile"]
    assert analytics["funnels"]["booking"][0] > 0
    assert set(experiments) == {"checkout-button"}
    assert "successfulBookings" in table
    assert results["insight-prune"] == {"web_vitals": 0, "kpi_values": 0}
    with session_scope() as session:
        [incident] = session.scalars(select(Incident).where(Incident.rule == "lcp-poor"))
    assert incident.title == "/vendors|mobile: vitals.lcp.p75 last 3800 >= 2500"
