"""The beat entries of logs, capacity and the weekly report, sent exactly as beat sends them
(task, kwargs, queue, expiry) to a real worker process over real Redis, doing their work in
real Postgres, on real files, and against a generated demo platform database. Then the CLI
reads what they left."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, make_url, select

from beat_schedule import BEAT_SCHEDULE
from core.backups.tools import Conn
from demo.platform_db import generate
from models.db import session_scope
from models.logs import CapacitySample, ErrorPattern, LogEntry
from models.tables import Incident
from tests.faults.harness import ROOT, Cluster, base_env, control_app, wait_for

ENTRIES = (
    "ingest-logs",
    "analyze-error-patterns",
    "rotate-logs-daily",
    "capacity-snapshot-daily",
    "weekly-performance-report",
)


@pytest.fixture
def platform_url(postgres_server_url: str) -> Iterator[str]:
    server = Conn.from_url(postgres_server_url)
    name = f"eventops_reports_{uuid.uuid4().hex[:8]}"
    with server.connect() as db:
        db.execute(f'CREATE DATABASE "{name}"')
    generate(server.with_db(name), scale=0.02, seed=5, days=5, now=datetime.now(UTC))
    # Not a string split: the embedded server's URL ends in ?host=/tmp/..., its socket.
    url = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with server.connect() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_every_beat_entry_names_a_registered_task_on_the_slow_queue() -> None:
    from workers.app import app

    app.loader.import_default_modules()  # the include list, as a worker loads it
    for name in ENTRIES:
        entry = BEAT_SCHEDULE[name]
        assert entry["task"] in app.tasks, name
        assert entry["options"]["queue"] == "slow"
        assert entry["options"]["expires"] > 0


def test_the_beat_entries_run_on_a_real_worker_against_real_postgres(
    clean_db: str, clean_redis: str, platform_url: str, tmp_path: Path
) -> None:
    var = tmp_path / "var"
    (var / "logs").mkdir(parents=True)
    (var / "logs" / "worker.log").write_text("old worker output\n" * 200)
    app_logs = tmp_path / "app"
    app_logs.mkdir()
    now = datetime.now(UTC)
    with (app_logs / "api.jsonl").open("w") as handle:
        for n in range(12):
            document = {
                "timestamp": (now - timedelta(minutes=3, seconds=-10 * n)).isoformat(),
                "level": "error",
                "service": "api",
                "message": f"booking {uuid.uuid4()} failed: vendor {n} unavailable",
            }
            handle.write(json.dumps(document) + "\n")
        handle.write("not json\n")
    config = tmp_path / "eventops.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "platform_url": "http://127.0.0.1:9",
                "logs": {
                    "sources": [{"name": "api", "kind": "application", "path": str(app_logs)}],
                    "rotation": {"own": {"path": "logs", "max_size": "1KB"}},
                },
                "capacity": {
                    "storage_paths": [str(app_logs)],
                    "limits": [{"metric": "users", "limit": 1_000_000}],
                },
            }
        )
    )
    env = base_env(clean_db, clean_redis, config, var)
    env["EVENTOPS_PLATFORM_DATABASE_URL"] = platform_url
    (tmp_path / "proc").mkdir()
    cluster = Cluster(env, tmp_path / "proc")
    client = control_app(clean_redis)
    try:
        cluster.start("worker", "worker", "-Q", "slow", "-c", "1", "-n", "slow@%h")
        # Beat's entries expire (ingest after 55 s): send them once the worker listens.
        wait_for("the worker", lambda: client.control.ping(timeout=1.0), timeout=120)
        for name in ENTRIES:
            entry = BEAT_SCHEDULE[name]
            client.send_task(entry["task"], kwargs=entry.get("kwargs") or {}, **entry["options"])

        def count(model: Any) -> int:
            with session_scope() as session:
                return int(session.scalar(select(func.count()).select_from(model)) or 0)

        wait_for("log entries", lambda: count(LogEntry) == 12, timeout=90)
        wait_for("an error pattern", lambda: count(ErrorPattern) == 1, timeout=60)
        wait_for("the burst incident", lambda: count(Incident) == 1, timeout=60)
        wait_for(
            "a rotated worker log",
            # Rotated now, compressed on the next run (delaycompress).
            lambda: list((var / "logs").glob("worker.log.2*Z")),
            timeout=60,
        )
        wait_for("capacity samples", lambda: count(CapacitySample) > 5, timeout=60)
        reports = var / "reports"
        report = wait_for(
            "the weekly report", lambda: list(reports.glob("weekly-*/index.html")), timeout=90
        )[0]
    except BaseException:
        print(cluster.tails())
        raise
    finally:
        cluster.stop()
    assert (var / "logs" / "worker.log").read_text() == ""
    with session_scope() as session:
        users = session.scalar(select(CapacitySample.value).where(CapacitySample.metric == "users"))
        incident = session.scalars(select(Incident)).one()
    assert users is not None and users > 0
    assert incident.fingerprint.startswith("logs:pattern:")
    assert "vendor <num> unavailable" in incident.title

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert report.parent.name in cli("reports", "list")
    assert cli("reports", "show").strip() == str(report)
    patterns = json.loads(cli("logs", "patterns", "--json"))
    assert [p["template"] for p in patterns] == ["booking <uuid> failed: vendor <num> unavailable"]
    assert "not JSON" in cli("logs", "files")
    capacity = json.loads(cli("reports", "capacity", "--json"))
    assert capacity["forecasts"][0]["metric"] == "users"
