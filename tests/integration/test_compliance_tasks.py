"""The compliance tasks run as Celery tasks (eagerly, in process) against real Postgres, and
a manual trigger through `send` (what `eventops tasks run` and the shell's `run` use) goes
through a real Redis broker and lands in the audit log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from celery import Celery
from sqlalchemy import select

from models.compliance import AuditEntry
from models.db import session_scope
from tasks import compliance as tasks
from workers import settings as settings_module
from workers.shell import send


@pytest.fixture
def env(clean_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "eventops.yaml"
    path.write_text(yaml.safe_dump({"platform_url": "http://127.0.0.1:9"}))
    monkeypatch.setenv("EVENTOPS_CONFIG_FILE", str(path))
    monkeypatch.setenv("EVENTOPS_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("EVENTOPS_PLATFORM_DATABASE_URL", raising=False)
    settings_module.get_settings.cache_clear()
    settings_module.get_config.cache_clear()
    yield path
    settings_module.get_settings.cache_clear()
    settings_module.get_config.cache_clear()


def test_config_check_audit_chain_and_report_tasks_work_together(env: Path) -> None:
    assert tasks.config_check.apply().get()["changed"] is True
    assert tasks.config_check.apply().get()["changed"] is False
    env.write_text(env.read_text() + "timezone: UTC\n")
    assert tasks.config_check.apply().get()["changed"] is True

    chain = tasks.audit_chain.apply().get()
    assert chain["ok"] is True and chain["rows"] == 2 and chain["anchored"] == 2
    anchors = (env.parent / "var" / "audit" / "anchors.jsonl").read_text().splitlines()
    assert json.loads(anchors[-1])["last_id"] == 2

    report = tasks.monthly_report.apply(kwargs={"month": "2026-11"}).get()
    assert Path(report["markdown"]).name == "security-audit-2026-11.md"
    assert Path(report["html"]).exists()

    skipped = tasks.privacy.apply().get()
    assert skipped == {"skipped": "EVENTOPS_PLATFORM_DATABASE_URL is not set"}
    assert "no advisory source" in tasks.vulnerability_scan.apply().get()["skipped"]
    assert tasks.breach_clocks.apply().get() == {
        "started": 0,
        "clocks": 0,
        "reminders": 0,
        "overdue": 0,
    }


def test_a_manually_triggered_task_is_audited_with_its_arguments(
    clean_db: str, clean_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "operator-ana")
    app = Celery("audit-test", broker=clean_redis)

    @app.task(name="demo.ping")
    def ping(times: int, loud: bool = False) -> int:
        return times

    sent = send("demo.ping", [3], {"loud": True}, app=app)
    with session_scope() as session:
        row = session.scalars(select(AuditEntry).where(AuditEntry.action == "task.run")).one()
    assert (row.actor, row.subject) == ("operator-ana", "task:demo.ping")
    assert row.details == {
        "task_id": sent.id,
        "queue": "celery",
        "args": [3],
        "kwargs": {"loud": True},
    }


def test_a_starting_worker_audits_the_config_it_found(env: Path) -> None:
    from celery.signals import worker_ready

    from workers.audit_signals import _audit_config_at_start

    # Connected to worker_ready (called directly here: sending the signal would also start
    # the other worker_ready handlers, such as the heartbeat thread, in the test process).
    assert _audit_config_at_start in [ref() for _, ref in worker_ready.receivers]
    _audit_config_at_start()
    _audit_config_at_start()  # a second worker, same file: nothing new
    with session_scope() as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "config.changed")
        ).all()
    assert len(rows) == 1 and rows[0].actor.startswith("worker@")
    assert rows[0].subject == str(env)
