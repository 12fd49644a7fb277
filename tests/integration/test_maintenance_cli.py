"""`eventops maintenance ...` against the test's real Postgres and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from core.clock import utcnow
from core.maintenance import selfmon
from core.maintenance.host_metrics import HostSample, record_heartbeat
from models.db import session_scope

ROOT = Path(__file__).resolve().parents[2]


def run(
    database_url: str, broker_url: str, tmp_path: Path, *args: str, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "eventops.yaml"
    config.write_text(yaml.safe_dump({"platform_url": "http://127.0.0.1:9"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
    env.update(
        EVENTOPS_DATABASE_URL=database_url,
        EVENTOPS_BROKER_URL=broker_url,
        EVENTOPS_CONFIG_FILE=str(config),
        EVENTOPS_VAR_DIR=str(tmp_path / "var"),
        **extra_env,
    )
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "maintenance", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_status_exits_0_when_healthy_and_1_naming_what_fails(
    clean_db: str, clean_redis: str, tmp_path: Path
) -> None:
    now = utcnow()
    with session_scope() as session:
        selfmon.stamp(session, selfmon.BEAT, now)
        selfmon.stamp(session, selfmon.SWEEPER, now)
        record_heartbeat(session, "celery@w1", HostSample(0.2, 0.5, 0.3), now)
    done = run(clean_db, clean_redis, tmp_path, "status", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["healthy"] is True
    assert [w["name"] for w in data["workers"]] == ["celery@w1"]
    assert {q["name"] for q in data["queues"]} == {"probes", "pipeline", "escalations", "slow"}

    forgot = run(clean_db, clean_redis, tmp_path, "forget-worker", "celery@w1")
    assert forgot.returncode == 0 and "forgot celery@w1" in forgot.stdout
    done = run(clean_db, clean_redis, tmp_path, "status")
    assert done.returncode == 1
    assert "FAIL worker   any" in done.stdout and "(none has reported)" in done.stdout


def test_index_report_prints_the_fixes(clean_db: str, clean_redis: str, tmp_path: Path) -> None:
    done = run(clean_db, clean_redis, tmp_path, "indexes", "--target", "eventops-db")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("indexes report for eventops-db:")
    unknown = run(clean_db, clean_redis, tmp_path, "vacuum", "--target", "platform-db")
    assert unknown.returncode == 2
    assert "'platform-db' is not a configured database with a URL" in unknown.stderr


def test_a_report_whose_database_cannot_be_read_exits_1(
    clean_db: str, clean_redis: str, tmp_path: Path
) -> None:
    from workers.embedded import free_port

    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/shop"
    done = run(
        clean_db,
        clean_redis,
        tmp_path,
        "vacuum",
        "--target",
        "platform-db",
        EVENTOPS_PLATFORM_DATABASE_URL=closed,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "vacuum report for platform-db: failed (OperationalError" in done.stderr
