"""The whole spine with real processes: beat -> Redis -> worker -> Postgres -> incident ->
notification, against a real failing HTTP target and a real webhook receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import func, select

from demo.platform import DemoPlatform
from models.db import session_scope
from models.tables import Incident, Notification, Outcome
from tests.receivers import WebhookReceiver

pytestmark = pytest.mark.e2e

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def wait_for(what: str, probe: Callable[[], T], timeout: float = 60.0) -> T:
    """Poll real processes' effects in Postgres; they run on their own clock, not ours."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


class Processes:
    def __init__(self, env: dict[str, str], logs: Path):
        self.env, self.logs = env, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (owned by the child)
        self.running[name] = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self) -> None:
        for child in self.running.values():
            child.send_signal(signal.SIGTERM)
        for child in self.running.values():
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()

    def tails(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in self.logs.glob("*.log")
        )


@pytest.fixture
def platform() -> Iterator[DemoPlatform]:
    with DemoPlatform(fail=["supabase"]) as demo:
        yield demo


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


def write_config(path: Path, platform: DemoPlatform, receiver: WebhookReceiver) -> None:
    path.write_text(
        f"""
platform_url: {platform.url}
network:
  allow_internal: [127.0.0.0/8]
checks:
  - name: supabase
    url: "{{platform_url}}/api/health/supabase"
    interval: 2s
    timeout: 1s
    alert_threshold: 2
    recovery_threshold: 2
    severity: critical
  - name: stripe
    url: "{{platform_url}}/api/health/stripe"
    interval: 2s
    timeout: 1s
channels:
  - name: hook
    url: {receiver.apprise_url}
policies:
  critical:
    steps:
      - after: 0s
        channels: [hook]
"""
    )


def count(query) -> int:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return session.scalar(query) or 0


def test_a_failing_target_opens_an_incident_pages_once_and_resolves_when_healthy(
    clean_db: str,
    clean_redis: str,
    tmp_path: Path,
    platform: DemoPlatform,
    receiver: WebhookReceiver,
) -> None:
    config = tmp_path / "eventops.yaml"
    write_config(config, platform, receiver)
    env = {
        **os.environ,
        "EVENTOPS_DATABASE_URL": clean_db,
        "EVENTOPS_BROKER_URL": clean_redis,
        "EVENTOPS_CONFIG_FILE": str(config),
        "EVENTOPS_VAR_DIR": str(tmp_path / "var"),
    }
    procs = Processes(env, tmp_path)
    try:
        assert "2 checks loaded" in procs.run("migrate")
        procs.start("worker", "worker", "-c", "2", "-n", "e2e@%h")
        procs.start("beat", "beat")

        def open_incident() -> Incident | None:
            with session_scope() as session:
                return session.scalars(
                    select(Incident).where(Incident.notified_at.is_not(None))
                ).first()

        incident = wait_for("an incident to open and be notified", open_incident)
        assert incident.title == "supabase is down"
        assert incident.severity == "critical"
        down = count(
            select(func.count())
            .select_from(Outcome)
            .where(Outcome.status == "down", Outcome.reason == "bad_status")
        )
        assert down >= 2
        wait_for("the page to arrive", lambda: receiver.titles())
        assert receiver.titles() == ["[CRITICAL] supabase is down"]

        platform.set_fault("supabase", "ok")

        def resolved() -> bool:
            with session_scope() as session:
                found = session.get(Incident, incident.id)
                return found is not None and found.status == "resolved"

        wait_for("the incident to resolve", resolved)
        wait_for("the resolution notice", lambda: len(receiver.titles()) >= 2)
        time.sleep(3)  # a few more ticks: nothing may be sent twice
        assert receiver.titles() == [
            "[CRITICAL] supabase is down",
            "[RESOLVED] supabase is back up",
        ]
        sent = count(
            select(func.count()).select_from(Notification).where(Notification.state == "sent")
        )
        assert sent == 2
        assert count(select(func.count()).select_from(Incident)) == 1
        # The healthy check never opened anything.
        assert "stripe" not in " ".join(receiver.titles())
    except AssertionError:
        procs.stop()
        raise AssertionError(procs.tails()) from None
    finally:
        procs.stop()
