"""Monitoring the monitor: marks, verdicts with an injected clock, the figures rules read,
and the dead man's switch pinged (or told /fail) over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core.maintenance import selfmon
from core.maintenance.host_metrics import HostSample, record_heartbeat
from core.maintenance.redis_metrics import QueueFigures
from core.rules import evaluate_rules
from models.config import load_config
from models.config_maintenance import MaintenanceConfig
from models.db import session_scope
from models.maintenance import SelfmonMark
from models.tables import Incident, Notification

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
CONFIG = MaintenanceConfig()


class PingReceiver:
    """A Healthchecks-style endpoint: records each ping's path and body."""

    def __init__(self) -> None:
        self.pings: list[tuple[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.pings.append((self.path, body.decode()))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/ping/5f1c-uuid"

    def __enter__(self) -> PingReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[PingReceiver]:
    with PingReceiver() as running:
        yield running


def healthy_system(at: datetime) -> None:
    """Every part of eventops left its mark at `at`."""
    with session_scope() as session:
        selfmon.stamp(session, selfmon.BEAT, at)
        selfmon.stamp(session, selfmon.SWEEPER, at)
        record_heartbeat(session, "celery@w1", HostSample(0.1, 0.5, 0.4), at, pid=11)


def verdicts_at(now: datetime, queues: list[QueueFigures] | None = None) -> list[selfmon.Verdict]:
    with session_scope() as session:
        return selfmon.evaluate(session, CONFIG, now, queues)


def failing(verdicts: list[selfmon.Verdict]) -> set[tuple[str, str]]:
    return {(v.check, v.subject) for v in verdicts if not v.healthy}


def test_all_checks_pass_while_every_part_left_a_fresh_mark(clean_db: str) -> None:
    healthy_system(NOW - timedelta(seconds=10))
    verdicts = verdicts_at(NOW, [QueueFigures("pipeline", 2, 3.0)])
    assert failing(verdicts) == set()
    assert {v.check for v in verdicts} == {"beat", "sweeper", "worker", "queue", "outbox"}


def test_a_stale_beat_mark_fails_the_beat_check_after_its_limit(clean_db: str) -> None:
    healthy_system(NOW)
    assert failing(verdicts_at(NOW + timedelta(seconds=60))) == set()
    with session_scope() as session:
        record_heartbeat(
            session, "celery@w1", HostSample(0.1, 0.5, 0.4), NOW + timedelta(minutes=2)
        )
        selfmon.stamp(session, selfmon.SWEEPER, NOW + timedelta(minutes=2))
    assert failing(verdicts_at(NOW + timedelta(minutes=2))) == {("beat", "beat")}


def test_never_seen_marks_and_no_workers_fail(clean_db: str) -> None:
    assert failing(verdicts_at(NOW)) == {
        ("beat", "beat"),
        ("sweeper", "escalation-sweeper"),
        ("worker", "any"),
    }


def test_a_stamp_never_moves_a_mark_back_in_time(clean_db: str) -> None:
    with session_scope() as session:
        selfmon.stamp(session, selfmon.BEAT, NOW)
        selfmon.stamp(session, selfmon.BEAT, NOW - timedelta(minutes=5))  # a late redelivery
    with session_scope() as session:
        assert session.scalar(select(SelfmonMark.last_seen)) == NOW


def test_queue_lag_over_the_limit_fails_only_that_queue(clean_db: str) -> None:
    healthy_system(NOW)
    queues = [QueueFigures("probes", 40, 301.0), QueueFigures("slow", 0, 0.0)]
    assert failing(verdicts_at(NOW, queues)) == {("queue", "probes")}


def test_outbox_backlog_counts_only_notifications_due_longer_than_the_limit(clean_db: str) -> None:
    healthy_system(NOW)
    with session_scope() as session:
        for due in (NOW - timedelta(minutes=6), NOW - timedelta(minutes=1)):
            session.add(
                Notification(
                    channel="hook",
                    kind="opened",
                    group_key="g",
                    severity="critical",
                    title="t",
                    body="b",
                    state="pending",
                    attempts=0,
                    next_attempt_at=due,
                    created_at=due,
                )
            )
    verdicts = verdicts_at(NOW)
    outbox = next(v for v in verdicts if v.check == "outbox")
    assert (outbox.healthy, outbox.value) == (False, 1.0)


def test_a_missing_worker_opens_the_seed_rules_critical_incident(
    clean_db: str, repo_root: Path
) -> None:
    config = load_config(repo_root / "config" / "eventops.yaml")
    healthy_system(NOW)
    with session_scope() as session:
        record_heartbeat(
            session, "celery@w2", HostSample(0.1, 0.5, 0.4), NOW - timedelta(minutes=3)
        )
    later = NOW + timedelta(seconds=30)
    with session_scope() as session:
        verdicts = selfmon.evaluate(session, config.maintenance, later)
        selfmon.record_verdicts(session, verdicts, later)
        evaluate_rules(session, config, later)
    with session_scope() as session:
        incidents = session.execute(
            select(Incident.rule, Incident.subject, Incident.severity)
        ).all()
    assert ("worker-missing", "celery@w2", "critical") in incidents
    assert not [i for i in incidents if i.subject == "celery@w1"]


def test_the_switch_is_pinged_while_healthy_and_told_fail_when_not(
    clean_db: str, receiver: PingReceiver
) -> None:
    healthy_system(NOW)
    result = selfmon.ping_deadmans_switch(receiver.url, verdicts_at(NOW))
    assert result == {"healthy": True, "status": 200, "ok": True}
    stale = verdicts_at(NOW + timedelta(minutes=5))
    result = selfmon.ping_deadmans_switch(receiver.url, stale)
    assert result["healthy"] is False
    (ok_path, _), (fail_path, fail_body) = receiver.pings
    assert ok_path == "/ping/5f1c-uuid"
    assert fail_path == "/ping/5f1c-uuid/fail"
    assert "FAIL beat beat" in fail_body and "FAIL worker celery@w1" in fail_body


def test_an_unreachable_switch_is_reported_not_raised() -> None:
    result = selfmon.ping_deadmans_switch("http://127.0.0.1:9/ping/x", [], timeout=2)
    assert result["ok"] is False and result["status"] is None


def test_fail_url_keeps_a_query_string() -> None:
    assert (
        selfmon.ping_url("https://hc-ping.com/abc?rid=1", False)
        == "https://hc-ping.com/abc/fail?rid=1"
    )
    assert selfmon.ping_url("https://hc-ping.com/abc", True) == "https://hc-ping.com/abc"
