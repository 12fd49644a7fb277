"""Flower in a real headless Chromium: behind basic auth, it lists the probe task a real worker
ran, with ids (never URLs or secrets) as arguments, and keeps it across a restart."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

from core.schedule import sync_checks
from models.config import load_config
from models.db import session_scope
from tests.browser.conftest import CHROMIUM_ARGS
from tests.processes import running_flower, running_worker, wait_for

USER, PASSWORD = "admin", "flower-test-pw-7431"
CONFIG = """
platform_url: http://127.0.0.1:9
network:
  allow_internal: [127.0.0.0/8]
checks:
  - {name: supabase, url: "http://127.0.0.1:9/rest/v1/health", interval: 1h, timeout: 2s}
"""


@pytest.fixture
def env(clean_db: str, clean_redis: str, tmp_path: Path) -> dict[str, str]:
    config_file = tmp_path / "eventops.yaml"
    config_file.write_text(CONFIG)
    with session_scope() as session:
        sync_checks(session, load_config(config_file), now=datetime(2026, 1, 1, tzinfo=UTC))
    return {
        **os.environ,
        "EVENTOPS_DATABASE_URL": clean_db,
        "EVENTOPS_BROKER_URL": clean_redis,
        "EVENTOPS_CONFIG_FILE": str(config_file),
        "EVENTOPS_VAR_DIR": str(tmp_path / "var"),
        "EVENTOPS_FLOWER_USER": USER,
        "EVENTOPS_FLOWER_PASSWORD": PASSWORD,
    }


def api_tasks(base: str) -> dict[str, Any]:
    reply = httpx.get(f"{base}/api/tasks", auth=(USER, PASSWORD), timeout=10)
    reply.raise_for_status()
    tasks: dict[str, Any] = reply.json()
    return tasks


def succeeded(base: str, name: str) -> list[dict[str, Any]]:
    return [t for t in api_tasks(base).values() if t["name"] == name and t["state"] == "SUCCESS"]


def test_flower_shows_the_completed_probe_task_to_a_logged_in_browser(
    env: dict[str, str], tmp_path: Path, chromium_path: str
) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    flower_log = tmp_path / "flower.log"
    with (
        running_flower(env, flower_log) as flower,
        running_worker(env, tmp_path / "worker.log"),
    ):
        base = flower.url
        # Refused without credentials (and with wrong ones), before anything else.
        assert httpx.get(f"{base}/tasks", timeout=10).status_code == 401
        assert httpx.get(f"{base}/tasks", auth=(USER, "wrong"), timeout=10).status_code == 401

        # Flower learns of tasks from the events it receives from here on (it is listening).
        with Celery(broker=env["EVENTOPS_BROKER_URL"]) as sender:
            sender.send_task("probes.dispatch_due", queue="pipeline")
        wait_for(lambda: succeeded(base, "probes.run_batch"), 90, "the probe batch in Flower")
        (batch,) = succeeded(base, "probes.run_batch")

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            try:
                # No credentials: the server says 401, and the page never loads.
                anonymous = browser.new_context()
                assert anonymous.request.get(f"{base}/tasks").status == 401
                with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
                    anonymous.new_page().goto(f"{base}/tasks")
                anonymous.close()

                context = browser.new_context(
                    http_credentials={"username": USER, "password": PASSWORD}
                )
                page = context.new_page()
                reply = page.goto(f"{base}/tasks")
                assert reply is not None and reply.status == 200
                row = page.locator("table tbody tr", has_text=batch["uuid"])
                expect(row).to_be_visible(timeout=30_000)
                expect(row).to_contain_text("probes.run_batch")
                expect(row).to_contain_text("SUCCESS")

                detail = page.goto(f"{base}/task/{batch['uuid']}")
                assert detail is not None and detail.status == 200
                text = page.content()
                # Readable: the task's name, its result summary; arguments are ids and slots.
                assert "probes.run_batch" in text and "probed" in text
                assert "/rest/v1/health" not in text, "a URL leaked into the task's arguments"
                assert PASSWORD not in text
                page.screenshot(path=str(tmp_path / "flower-tasks.png"))
                context.close()
            finally:
                browser.close()

    assert (tmp_path / "flower-tasks.png").stat().st_size > 0
    # Persistent history: a new Flower on the same database still lists the task.
    with running_flower(env, flower_log) as flower:
        wait_for(lambda: batch["uuid"] in api_tasks(flower.url), 30, "the task after a restart")
        assert api_tasks(flower.url)[batch["uuid"]]["state"] == "SUCCESS"
