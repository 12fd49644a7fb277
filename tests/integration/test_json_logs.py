"""JSON logs: every line a worker writes is one JSON object naming its task and check."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from celery import Celery
from click.testing import CliRunner

from core.logcontext import log_context
from core.schedule import sync_checks
from models.config import load_config
from models.db import session_scope
from tests.processes import ROOT, eventops, running_worker, stop, wait_for
from workers.logging_setup import CONTEXT_KEYS, configure_logging

CONTEXT = ("time", "level", "logger", "message", *CONTEXT_KEYS)

CONFIG = """
platform_url: http://127.0.0.1:9
network:
  allow_internal: [127.0.0.0/8]
checks:
  - {name: api, url: "http://127.0.0.1:9/health", interval: 1h, timeout: 2s}
channels:
  - {name: hook, url: "json://127.0.0.1:9/hook"}
policies:
  critical:
    steps: [{after: 0s, channels: [hook]}]
"""


def parse_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no log lines at all"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


@pytest.fixture
def root_logger_restored() -> object:
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, sys.excepthook
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook = hook


def test_a_line_logged_inside_a_check_context_names_the_check(root_logger_restored: object) -> None:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    log = logging.getLogger("eventops.test")
    with log_context(check="stripe"):
        log.info("probing %s", "stripe")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it broke")
    log.warning("outside")

    inside, broke, outside = parse_lines(stream.getvalue())
    assert inside["message"] == "probing stripe" and inside["check"] == "stripe"
    assert inside["level"] == "INFO" and inside["logger"] == "eventops.test"
    assert inside["task_id"] is None and inside["task_name"] is None
    assert broke["check"] == "stripe" and "ValueError: boom" in str(broke["exception"])
    assert outside["check"] is None and outside["message"] == "outside"
    assert datetime.fromisoformat(str(inside["time"])).tzinfo == UTC


def test_text_format_shows_the_context_at_the_end_of_the_line(
    root_logger_restored: object,
) -> None:
    stream = io.StringIO()
    configure_logging("text", "INFO", stream=stream)
    with log_context(check="mapbox", task_id="abc", task_name="probes.run_batch"):
        logging.getLogger("eventops.test").info("slow answer")
    line = stream.getvalue().strip()
    assert line.endswith("slow answer [probes.run_batch[abc] check=mapbox]")


def test_a_real_worker_writes_only_json_lines_with_task_id_and_check(
    clean_db: str, clean_redis: str, tmp_path: Path
) -> None:
    config_file = tmp_path / "eventops.yaml"
    config_file.write_text(CONFIG)
    with session_scope() as session:
        sync_checks(session, load_config(config_file), now=datetime(2026, 1, 1, tzinfo=UTC))
    env = {
        **os.environ,
        "EVENTOPS_DATABASE_URL": clean_db,
        "EVENTOPS_BROKER_URL": clean_redis,
        "EVENTOPS_CONFIG_FILE": str(config_file),
        "EVENTOPS_VAR_DIR": str(tmp_path / "var"),
        "EVENTOPS_LOG_FORMAT": "json",
    }
    log = tmp_path / "worker.log"
    client = redis.Redis.from_url(clean_redis)
    # Celery writes its shutdown notice to stdout itself; the log is stderr.
    queues = "pipeline,probes,escalations,slow"
    with running_worker(env, log, queues=queues, stdout=tmp_path / "stdout.txt"):
        with Celery(broker=clean_redis) as sender:
            sender.send_task("probes.dispatch_due", queue="pipeline")
            sender.send_task("compliance.config_check", queue="slow")
        wait_for(
            lambda: (
                client.hget("eventops:metrics:task:escalations.sweep", "count")
                and client.hget("eventops:metrics:task:compliance.config_check", "count")
            ),
            60,
            "the probe batch, the sweep it kicks and the config audit to finish",
        )

    lines = parse_lines(log.read_text())
    for line in lines:
        assert {"time", "level", "logger", "message", "task_id", "task_name", "check"} <= set(
            line
        ), line

    batch = [line for line in lines if line["task_name"] == "probes.run_batch"]
    assert batch, "no line names the probe batch task"
    assert len({line["task_id"] for line in batch}) == 1 and batch[0]["task_id"]
    # The check went down and opened an incident: that line names the check and the task.
    opening = [line for line in batch if "opening its incident" in str(line["message"])]
    assert len(opening) == 1, batch
    assert opening[0]["check"] == "api"
    # Celery's own lines about a task name it; a routine task's (the tick, the batch, the
    # sweep) are DEBUG lines, left out at INFO.
    celery_lines = [line for line in lines if line["message"].startswith("Task ")]
    assert {line["task_name"] for line in celery_lines} == {"compliance.config_check"}
    assert len(celery_lines) == 2 and all(line["task_id"] for line in celery_lines)
    # Lines logged by a library's own threads inside the task (Apprise) still name it.
    sweep = [line for line in lines if line["logger"] == "apprise"]
    assert sweep and all(line["task_name"] == "escalations.sweep" for line in sweep)
    assert any("shutdown" in str(line["message"]) for line in lines)


def test_cli_commands_log_json_when_asked(
    clean_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_logger_restored: object
) -> None:
    from workers import settings as settings_module
    from workers.cli import main

    monkeypatch.setenv("EVENTOPS_LOG_FORMAT", "json")
    monkeypatch.setenv("EVENTOPS_DATABASE_URL", clean_db)
    settings_module.get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["checks", "list", "--json"], catch_exceptions=False)
        assert result.exit_code == 0
        handlers = [h for h in logging.getLogger().handlers if getattr(h, "_eventops_handler", 0)]
        assert len(handlers) == 1
        assert type(handlers[0].formatter).__name__ == "JsonFormatter"
    finally:
        settings_module.get_settings.cache_clear()


def test_beat_writes_only_json_lines(clean_db: str, clean_redis: str, tmp_path: Path) -> None:
    config_file = tmp_path / "eventops.yaml"
    config_file.write_text(CONFIG)
    env = {
        **os.environ,
        "EVENTOPS_DATABASE_URL": clean_db,
        "EVENTOPS_BROKER_URL": clean_redis,
        "EVENTOPS_CONFIG_FILE": str(config_file),
        "EVENTOPS_VAR_DIR": str(tmp_path / "var"),
        "EVENTOPS_LOG_FORMAT": "json",
    }
    log = tmp_path / "beat.log"
    with open(log, "wb") as err:
        beat = subprocess.Popen(
            eventops("beat"), env=env, cwd=ROOT, stdout=err, stderr=subprocess.STDOUT
        )
    try:
        # The dispatch tick runs every few seconds: wait until one is queued in Redis.
        queued = redis.Redis.from_url(clean_redis)
        wait_for(lambda: queued.llen("pipeline") > 0, 90, "beat's first tick")
    finally:
        stop(beat)
    lines = parse_lines(log.read_text())
    assert all(set(CONTEXT) <= set(line) for line in lines)
    assert not [line for line in lines if line["level"] in ("ERROR", "CRITICAL")], lines
    assert any(line["logger"].startswith("celery.beat") for line in lines)
    # It sent the dispatch tick, but at INFO beat does not say so every two seconds.
    assert not [line for line in lines if "Sending due task" in str(line["message"])], lines


def test_a_crash_in_json_mode_is_one_json_line(tmp_path: Path) -> None:
    script = (
        "from workers.logging_setup import configure_logging\n"
        "configure_logging('json')\n"
        "raise RuntimeError('the end')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    (line,) = parse_lines(done.stderr)
    assert line["level"] == "CRITICAL" and "RuntimeError: the end" in str(line["exception"])


def test_a_probe_writes_no_log_line_of_its_own_at_info(root_logger_restored: object) -> None:
    # httpx logs every request at INFO; at thousands of probes a second that was a fifth of
    # a probe's CPU and a flood in the logs. The outcome row is the probe's record.
    import asyncio
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from core.netguard import AddressPolicy
    from core.probing import ProbeTarget, make_client, probe

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    target = ProbeTarget(
        1, datetime.now(UTC), f"http://127.0.0.1:{server.server_port}/", "GET", 5.0, (200,), 1024
    )

    async def run() -> str:
        async with make_client(policy=AddressPolicy.from_allow_list(["127.0.0.0/8"])) as client:
            return (await probe(client, target)).status

    try:
        assert asyncio.run(run()) == "up"
    finally:
        server.shutdown()
    logging.getLogger("eventops.test").info("after the probe")
    [only] = parse_lines(stream.getvalue())
    assert only["message"] == "after the probe"


def test_httpx_request_lines_come_back_when_workers_log_at_debug(
    root_logger_restored: object,
) -> None:
    configure_logging("json", "DEBUG", stream=io.StringIO())
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG
    configure_logging("json", "INFO", stream=io.StringIO())
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING


def test_routine_task_lines_come_back_as_debug_when_asked_and_others_stay_info(
    root_logger_restored: object,
) -> None:
    from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

    def say(received_by: str, name: str) -> None:
        logging.getLogger(received_by).info(
            LOG_SUCCESS if received_by == "celery.app.trace" else LOG_RECEIVED,
            {"id": "t1", "name": name, "runtime": 0.01, "return_value": {}},
        )

    for level in ("INFO", "DEBUG"):
        stream = io.StringIO()
        configure_logging("json", level, stream=stream)
        say("celery.worker.strategy", "probes.dispatch_due")
        say("celery.app.trace", "probes.run_batch")
        logging.getLogger("celery.beat").info(
            "Scheduler: Sending due task %s (%s)", "dispatch-due-checks", "probes.dispatch_due"
        )
        say("celery.app.trace", "backups.dump")
        lines = [(line["level"], line["task_name"]) for line in parse_lines(stream.getvalue())]
        if level == "INFO":
            assert lines == [("INFO", "backups.dump")]
        else:
            assert lines == [
                ("DEBUG", "probes.dispatch_due"),
                ("DEBUG", "probes.run_batch"),
                ("DEBUG", None),
                ("INFO", "backups.dump"),
            ]
