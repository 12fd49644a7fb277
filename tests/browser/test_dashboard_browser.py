"""The live dashboard in real headless Chromium: log in, watch a service fail and turn red
without a reload, acknowledge its incident with the button, see an acknowledgement made from
Python appear, and keep a screenshot.

Real parts throughout: the demo platform's HTTP health endpoints with a fault switch, the
probe and pipeline functions the workers run (claim due slots, probe over HTTP, record the
outcomes), Postgres, and `eventops dashboard` as its own process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from core import incidents as lifecycle
from core.incidents import Problem, raise_problem
from core.pipeline import record_outcomes
from core.probing import make_client, probe_all
from core.schedule import claim_due_slots, sync_checks
from demo.platform import DemoPlatform
from models.config import EventopsConfig
from models.db import session_scope
from models.tables import Incident
from tasks.probes import load_targets
from tests.conftest import make_config
from tests.dashboard_server import Dashboard, running_dashboard

pytestmark = pytest.mark.browser

# Generous: the page polls every 3 s, and the machine is shared.
WAIT_MS = 30_000
RED = "rgb(217, 48, 37)"


@pytest.fixture
def platform() -> Iterator[DemoPlatform]:
    with DemoPlatform() as server:
        yield server


@pytest.fixture
def dashboard(clean_db: str, broker_url: str, tmp_path: Path) -> Iterator[Dashboard]:
    with running_dashboard(clean_db, broker_url, tmp_path / "var") as server:
        yield server


def probe_round(config: EventopsConfig, now: datetime) -> dict[str, Any]:
    """What one dispatch tick and its probe batch do, without the broker in between."""
    with session_scope() as session:
        slots = claim_due_slots(session, now=now)
    targets = load_targets([(s.check_id, s.slot) for s in slots])

    async def probe() -> list[Any]:
        async with make_client() as client:
            return await probe_all(client, targets)

    # Playwright's sync API keeps an event loop on this thread; the probes get their own.
    with ThreadPoolExecutor(1) as pool:
        results = pool.submit(asyncio.run, probe()).result()
    with session_scope() as session:
        return record_outcomes(session, results, config, now=now).to_json()


def log_in(page: Any, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.url}/")
    assert "/login" in page.url  # no session yet: the page sends us to log in
    page.fill("#username", dashboard.user)
    page.fill("#password", dashboard.password)
    page.click("#login-submit")
    page.wait_for_url(f"{dashboard.url}/")
    page.wait_for_selector("#live[data-state='live']", timeout=WAIT_MS)


def test_a_failing_service_turns_red_live_and_is_acknowledged_from_the_page_and_the_shell(
    browser_context: Any, dashboard: Dashboard, platform: DemoPlatform, tmp_path: Path
) -> None:
    config = make_config(
        platform_url=platform.url,
        checks=[
            {
                "name": "stripe",
                "url": "{platform_url}/api/health/stripe",
                "interval": "1m",
                "timeout": "5s",
                "group": "payments",
            },
            {
                "name": "mapbox",
                "url": "{platform_url}/api/health/mapbox",
                "interval": "1m",
                "timeout": "5s",
                "group": "maps",
            },
        ],
    )
    # Two minutes back, so both probe rounds' slots lie inside the chart's last hour.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    with session_scope() as session:
        sync_checks(session, config, now=start)
    assert probe_round(config, start)["opened"] == []

    page = browser_context.new_page()
    log_in(page, dashboard)
    stripe = "#checks tr[data-check-name='stripe']"
    page.wait_for_selector(f"{stripe}[data-state='up']", timeout=WAIT_MS)
    # A marker that a reload would wipe: every change below must arrive without one.
    page.evaluate("window.__sameDocument = true")

    platform.set_fault("stripe", "fail")
    summary = probe_round(config, start + timedelta(minutes=1))
    assert len(summary["opened"]) == 1
    page.wait_for_selector(f"{stripe}[data-state='down']", timeout=WAIT_MS)
    dot_color = page.eval_on_selector(f"{stripe} .dot", "e => getComputedStyle(e).backgroundColor")
    assert dot_color == RED
    assert page.text_content(f"{stripe} td.reason") == "bad_status"
    assert page.text_content("#count-down") == "1"

    with session_scope() as session:
        incident_id = session.scalars(
            select(Incident.id).where(Incident.fingerprint == "check:stripe")
        ).one()
    row = f"#incidents tr[data-incident-id='{incident_id}']"
    page.wait_for_selector(f"{row}[data-status='open']", timeout=WAIT_MS)
    page.click(f"{row} button.ack")
    page.wait_for_selector(f"{row}[data-status='acknowledged']", timeout=WAIT_MS)
    assert f"by {dashboard.user}" in (page.text_content(row) or "")
    with session_scope() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        assert (incident.status, incident.acknowledged_by) == ("acknowledged", dashboard.user)

    # An incident acknowledged from the Python shell shows up on the open page.
    with session_scope() as session:
        other = raise_problem(
            session,
            Problem(
                fingerprint="rule:bookings-drop",
                title="Bookings dropped 60% below the weekly baseline",
                severity="warning",
                summary="bookings 12/h, baseline 30/h",
            ),
            config,
        )
    assert other is not None
    other_row = f"#incidents tr[data-incident-id='{other}']"
    page.wait_for_selector(f"{other_row}[data-status='open']", timeout=WAIT_MS)
    assert lifecycle.acknowledge(other, "alice@shell")
    page.wait_for_selector(f"{other_row}[data-status='acknowledged']", timeout=WAIT_MS)
    assert "by alice@shell" in (page.text_content(other_row) or "")

    # The incident's timeline, one click away, names who acknowledged it.
    page.click(f"{row} button[data-timeline]")
    page.wait_for_selector("#timeline li[data-kind='acknowledged']", timeout=WAIT_MS)
    assert f"by {dashboard.user}" in (page.text_content("#timeline") or "")

    assert page.evaluate("window.__sameDocument") is True
    # The chart of the selected (failing) check is drawn as inline SVG.
    # Waits for what only stripe's chart has (a down bucket), not for any chart: the one
    # drawn before the click is in the page already. "attached", not "visible": local
    # latencies round to the same ms, and a flat line's zero-height box counts as hidden.
    page.click(stripe)
    page.wait_for_selector("#chart svg rect.down", state="attached", timeout=WAIT_MS)
    assert page.text_content("#detail-title") == "Response time · stripe"
    # The line runs through both probes: up at `start`, down a minute later.
    assert (page.get_attribute("#chart svg path.line", "d") or "").count("L") == 1

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000

    # Filters are server-side and kept in the URL: a shared link opens the same view.
    page.select_option("#filter-state", "down")
    page.wait_for_selector("#checks tr[data-check-name='mapbox']", state="detached")
    assert page.url.endswith("#state=down")
    page.goto(f"{dashboard.url}/#state=up")
    page.wait_for_selector("#checks tr[data-check-name='mapbox']", timeout=WAIT_MS)
    assert page.locator(stripe).count() == 0
