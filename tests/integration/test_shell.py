"""The Python shell and `eventops tasks`, against real Postgres, real Redis and a real worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import select

from core.clock import utcnow
from core.incidents import Problem, raise_problem
from core.schedule import sync_checks
from models.config import load_config
from models.db import session_scope
from models.tables import Check, IncidentEvent
from workers import settings as settings_module
from workers.cli import main

ROOT = Path(__file__).resolve().parents[2]

# One check whose target refuses connections at once: a probe of it is a quick `down` outcome.
CONFIG = """
platform_url: http://127.0.0.1:9
network:
  allow_internal: [127.0.0.0/8]
checks:
  - name: api
    url: "{platform_url}/health"
    interval: 1h
    timeout: 2s
    alert_threshold: 3
channels:
  - name: hook
    url: json://127.0.0.1:9/hook
policies:
  critical:
    steps:
      - after: 0s
        channels: [hook]
"""


@pytest.fixture
def config_file(clean_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The config this process and its child processes share; the check loaded, due in an hour."""
    path = tmp_path / "eventops.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("EVENTOPS_CONFIG_FILE", str(path))
    settings_module.get_settings.cache_clear()
    settings_module.get_config.cache_clear()
    with session_scope() as session:
        sync_checks(session, load_config(path), now=utcnow() + timedelta(hours=1))
    yield path
    settings_module.get_settings.cache_clear()
    settings_module.get_config.cache_clear()


@pytest.fixture
def env(clean_db: str, clean_redis: str, config_file: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of the child processes: the fixtures' services, nothing found elsewhere."""
    return {
        **os.environ,
        "EVENTOPS_DATABASE_URL": clean_db,
        "EVENTOPS_BROKER_URL": clean_redis,
        "EVENTOPS_CONFIG_FILE": str(config_file),
        "EVENTOPS_VAR_DIR": str(tmp_path / "var"),
    }


def eventops(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("eventops")
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "workers.cli"]
    return [*prefix, *args]


def shell(env: dict[str, str], lines: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        eventops("shell"),
        input=lines,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def open_incident() -> int:
    config = load_config(Path(os.environ["EVENTOPS_CONFIG_FILE"]))
    with session_scope() as session:
        incident_id = raise_problem(
            session,
            Problem(
                fingerprint="check:api",
                title="api is down",
                severity="critical",
                summary="api: refused",
                labels={"check": "api", "group": "api"},
            ),
            config,
        )
    assert incident_id is not None
    return incident_id


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    """A real worker process on the queues a probe and a sweep need."""
    log = tmp_path / "worker.log"
    name = f"shelltest-{uuid.uuid4().hex[:8]}@%h"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            eventops("worker", "-Q", "pipeline,probes,escalations", "-c", "1", "-n", name),
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Ready when it answers a ping over the same broker (an app of our own, so this
        # process's configured app is left alone).
        with Celery(broker=env["EVENTOPS_BROKER_URL"]) as probe:
            deadline = time.monotonic() + 30
            while not probe.control.ping(timeout=0.5):
                assert child.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
        yield log
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def test_the_namespace_has_what_the_cheat_sheet_advertises(env: dict[str, str]) -> None:
    from workers.shell import CHEAT_SHEET, build_namespace

    namespace = build_namespace()
    try:
        for name in (
            "app",
            "tasks",
            "session",
            "select",
            "checks",
            "probe_now",
            "incidents",
            "silence",
            "silences",
            "run_backup",
            "backups",
            "run",
            "Check",
            "Outcome",
            "Incident",
            "IncidentEvent",
            "Notification",
            "Silence",
            "Backup",
            "RestoreRun",
            "Metric",
        ):
            assert name in namespace, name
        assert namespace["app"].main == "eventops"
        assert namespace["tasks"].probes.dispatch_due.name == "probes.dispatch_due"
        assert namespace["tasks"]["backups.dump"].name == "backups.dump"
        listed = [line.split() for line in repr(namespace["tasks"]).splitlines()]
        assert ["escalations.sweep", "queue", "escalations"] in listed
        session, select = namespace["session"], namespace["select"]
        assert session.scalars(select(namespace["Check"].name)).all() == ["api"]
        assert repr(namespace["checks"]()).startswith("<Check api unknown every 1h")
        assert len(CHEAT_SHEET.splitlines()) <= 13
    finally:
        namespace["session"].close()


def test_incidents_can_be_read_and_changed_through_the_shell_api(env: dict[str, str]) -> None:
    from workers.shell import Incidents

    incident_id = open_incident()
    incidents = Incidents()
    assert [i.id for i in incidents.open()] == [incident_id]

    acked = incidents.acknowledge(incident_id, by="ana")
    assert acked.status == "acknowledged" and acked.acknowledged_by == "ana"
    assert repr(acked).startswith(
        f"<Incident #{incident_id} critical acknowledged by ana 'api is down' since "
    )
    assert incidents.note(incident_id, "rolled back", by="ana").detail == "rolled back"
    with session_scope() as session:
        kinds = session.scalars(
            select(IncidentEvent.kind)
            .where(IncidentEvent.actor == "ana")
            .order_by(IncidentEvent.id)
        ).all()
    assert kinds == ["acknowledged", "note"]
    assert "acknowledged by ana" in repr(incidents.timeline(incident_id))

    resolved = incidents.resolve(incident_id, by="ana")
    assert resolved.status == "resolved" and incidents.open() == []
    assert repr(incidents.open()) == "(none)"
    assert [i.id for i in incidents.all()] == [incident_id]


def test_probe_now_marks_the_check_due(env: dict[str, str]) -> None:
    from workers.shell import probe_now

    before = utcnow()
    request = probe_now("api", wait=0)
    assert repr(request).startswith("<probe api: due since ")
    with session_scope() as session:
        due = session.scalar(select(Check.next_due_at).where(Check.name == "api"))
    assert due is not None and before <= due <= utcnow()
    with pytest.raises(LookupError, match="did you mean api"):
        probe_now("apj", wait=0)


def test_eventops_shell_reads_commands_from_stdin(env: dict[str, str]) -> None:
    open_incident()
    done = shell(env, "print(len(incidents.open()))\n")
    assert done.returncode == 0, done.stderr
    assert (
        "eventops shell. Loaded: app" in done.stdout
        and 'probe_now("stripe", wait=15)' in done.stdout
    )
    assert done.stdout.splitlines()[-1] == "1"


def test_tasks_are_listed_with_their_queues(env: dict[str, str]) -> None:
    listed = CliRunner().invoke(main, ["tasks", "list"])
    assert listed.exit_code == 0, listed.output
    assert ["probes.dispatch_due", "pipeline"] in [
        line.split() for line in listed.output.splitlines()
    ]
    as_json = json.loads(CliRunner().invoke(main, ["tasks", "list", "--json"]).output)
    assert {"name": "backups.dump", "queue": "slow"} in as_json


def test_tasks_run_refuses_bad_json_and_unknown_names_with_exit_2(env: dict[str, str]) -> None:
    bad = CliRunner().invoke(main, ["tasks", "run", "escalations.sweep", "--args", "[1,"])
    assert bad.exit_code == 2 and "--args" in bad.output and "not valid JSON" in bad.output
    wrong = CliRunner().invoke(main, ["tasks", "run", "backups.dump", "--kwargs", "[]"])
    assert wrong.exit_code == 2 and "must be a JSON object" in wrong.output
    unknown = CliRunner().invoke(main, ["tasks", "run", "escalations.swep"])
    assert unknown.exit_code == 2 and "did you mean escalations.sweep" in unknown.output


def test_tasks_run_without_a_worker_times_out_with_exit_4(env: dict[str, str]) -> None:
    done = subprocess.run(
        eventops("tasks", "run", "escalations.sweep", "--wait", "1"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4 and done.stdout == ""
    assert "no result within 1 s; is a worker consuming the 'escalations' queue?" in done.stderr


def test_with_a_real_worker_tasks_run_waits_and_probe_now_returns_the_outcome(
    env: dict[str, str], worker: Path
) -> None:
    done = subprocess.run(
        eventops("tasks", "run", "escalations.sweep", "--wait", "30"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr + worker.read_text()[-3000:]
    assert json.loads(done.stdout) == {"queued": 0, "sent": 0, "failed": 0, "postmortems": 0}

    probed = shell(env, 'print(repr(probe_now("api", wait=20)))\n')
    assert probed.returncode == 0, probed.stderr
    assert "<Outcome api down at " in probed.stdout, probed.stdout + worker.read_text()[-3000:]
    assert "refused" in probed.stdout
