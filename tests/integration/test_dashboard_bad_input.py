"""The dashboard answers bad filters with 400 naming the parameter (never a 500), and its
incident list keeps critical incidents when more are open than it shows."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest

from core import dashboard as queries
from core.incidents import Problem, raise_problem
from core.schedule import sync_checks
from models.db import session_scope
from tests.conftest import make_config
from tests.dashboard_server import Dashboard

CONFIG = make_config()


@pytest.mark.parametrize(
    ("query", "parameter"),
    [({"q": "str\x00"}, "q"), ({"after": "a\x00b"}, "after"), ({"group": "\x00"}, "group")],
)
def test_a_nul_in_a_check_filter_is_a_400_naming_the_parameter(
    dashboard: Dashboard, clean_db: str, query: dict[str, str], parameter: str
) -> None:
    client, _ = dashboard.login()
    with closing(client):
        response = client.get("/api/checks", params=query)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(f"{parameter}: ")


def test_a_name_prefix_ending_in_the_last_code_point_is_answered_not_a_500(
    dashboard: Dashboard, clean_db: str
) -> None:
    checks = [
        {"name": n, "url": "http://127.0.0.1:9/", "interval": "1m", "timeout": "5s"}
        for n in ("stripe", "supabase")
    ]
    with session_scope() as session:
        sync_checks(session, make_config(checks=checks))
    client, _ = dashboard.login()
    with closing(client):
        last = client.get("/api/checks", params={"q": "stripe\U0010ffff"})
        plain = client.get("/api/checks", params={"q": "st"})
    assert last.status_code == 200, last.text
    assert last.json()["items"] == []
    assert [item["name"] for item in plain.json()["items"]] == ["stripe"]


def test_an_older_critical_incident_stays_on_the_list_under_a_storm_of_newer_warnings(
    clean_db: str,
) -> None:
    start = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    with session_scope() as session:
        critical = raise_problem(
            session,
            Problem(fingerprint="test:db", title="db is down", severity="critical", summary="x"),
            CONFIG,
            now=start,
        )
        for n in range(12):
            raise_problem(
                session,
                Problem(
                    fingerprint=f"test:w{n}", title=f"warning {n}", severity="warning", summary="x"
                ),
                CONFIG,
                now=start + timedelta(minutes=n + 1),
            )
    with session_scope() as session:
        found = queries.open_incidents(session, limit=5)
    assert found["total"] == 13
    assert found["items"][0]["id"] == critical
    assert [item["severity"] for item in found["items"]] == ["critical"] + ["warning"] * 4
    # Newest first among the warnings.
    assert [item["title"] for item in found["items"][1:]] == [
        "warning 11",
        "warning 10",
        "warning 9",
        "warning 8",
    ]


def test_an_oversized_login_body_is_refused_without_being_read_whole(
    dashboard: Dashboard,
) -> None:
    big = {"username": "admin", "password": "x" * (1024 * 1024)}
    with dashboard.client() as client:
        response = client.post("/login", data=big)
    assert response.status_code == 413, response.text
    assert response.json()["detail"].startswith("body: larger than")


def test_the_worker_panel_uses_the_configured_staleness_limit(clean_db: str) -> None:
    from core.maintenance.host_metrics import HostSample, record_heartbeat

    now = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    with session_scope() as session:
        record_heartbeat(
            session, "probes@w1", HostSample(0.1, 0.2, 0.3), now - timedelta(minutes=2)
        )
    with session_scope() as session:
        found = queries.workers_and_queues(
            session, now, None, ("probes",), stale_after=timedelta(minutes=5)
        )
    # Two minutes is past the 90 s default but inside the configured five minutes.
    assert [(w["name"], w["alive"]) for w in found["workers"]] == [("probes@w1", True)]
