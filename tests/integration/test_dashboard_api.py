"""The dashboard's HTTP API on a real `eventops dashboard` process and real Postgres:
login, sessions, CSRF, acknowledge, the check list and charts."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.incidents import Problem, raise_problem
from core.pipeline import record_outcomes
from core.probing import ProbeResult
from core.schedule import sync_checks
from models.db import session_scope
from models.tables import Check, Incident, IncidentEvent
from tests.conftest import make_config
from tests.dashboard_server import Dashboard

CONFIG = make_config()


def open_incident(title: str = "stripe is down") -> int:
    with session_scope() as session:
        incident_id = raise_problem(
            session,
            Problem(fingerprint=f"test:{title}", title=title, severity="warning", summary="x"),
            CONFIG,
        )
    assert incident_id is not None
    return incident_id


def timeline(incident_id: int) -> list[tuple[str, str]]:
    with session_scope() as session:
        return [
            (e.kind, e.actor)
            for e in session.scalars(
                select(IncidentEvent)
                .where(IncidentEvent.incident_id == incident_id)
                .order_by(IncidentEvent.id)
            )
        ]


def incident_status(incident_id: int) -> tuple[str, str | None]:
    with session_scope() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        return incident.status, incident.acknowledged_by


def test_without_a_session_pages_redirect_to_login_and_the_api_answers_401(
    dashboard: Dashboard, clean_db: str
) -> None:
    incident_id = open_incident()
    with dashboard.client() as client:
        page = client.get("/")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2F"
        for path in (
            "/api/checks",
            "/api/summary",
            "/api/incidents",
            f"/api/incidents/{incident_id}",
            "/api/workers",
            "/api/insight",
            "/api/reports",
            "/api/groups",
            "/openapi.json",
        ):
            assert client.get(path).status_code == 401, path
        refused = client.post(f"/api/incidents/{incident_id}/acknowledge")
        assert refused.status_code == 401
        # A forged or tampered cookie is no session either.
        client.cookies.set("eventops_session", "eyJ1Ijoib3BzIn0.forged")
        assert client.get("/api/checks").status_code == 401
        assert client.get("/").status_code == 303
        assert client.get("/healthz").status_code == 200  # liveness only, no data
    assert incident_status(incident_id) == ("open", None)


def test_login_sets_an_httponly_samesite_lax_cookie_and_the_page_carries_a_csrf_token(
    dashboard: Dashboard,
) -> None:
    with dashboard.client() as client:
        response = client.post(
            "/login",
            data={"username": dashboard.user, "password": dashboard.password, "next": "/"},
        )
        assert response.status_code == 303 and response.headers["location"] == "/"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("eventops_session=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        page = client.get("/")
        assert page.status_code == 200
        assert '<meta name="csrf-token" content="' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # The redirect after login never leaves the site.
        away = client.post(
            "/login",
            data={
                "username": dashboard.user,
                "password": dashboard.password,
                "next": "//evil.example/x",
            },
        )
        assert away.headers["location"] == "/"


def test_a_wrong_password_is_refused_and_repeated_failures_are_rate_limited(
    dashboard: Dashboard,
) -> None:
    # A client address of its own (it connects from 127.0.0.2), so the lock-out does not
    # slow the other tests, which log in from 127.0.0.1.
    with dashboard.client(source="127.0.0.2") as client:
        for _ in range(5):
            wrong = client.post("/login", data={"username": "intruder", "password": "guess"})
            assert wrong.status_code == 401
            assert "eventops_session" not in wrong.headers.get("set-cookie", "")
        limited = client.post(
            "/login", data={"username": dashboard.user, "password": dashboard.password}
        )
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) > 0
        assert "eventops_session" not in limited.headers.get("set-cookie", "")
    # Another address still logs in.
    client, _ = dashboard.login()
    client.close()


def test_acknowledge_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
    dashboard: Dashboard, clean_db: str
) -> None:
    incident_id = open_incident()
    before = timeline(incident_id)
    client, token = dashboard.login()
    with closing(client):
        path = f"/api/incidents/{incident_id}/acknowledge"
        assert client.post(path).status_code == 403
        assert client.post(path, headers={"X-CSRF-Token": "not-the-token"}).status_code == 403
        # The right token from another site's page is still refused (Origin check).
        cross = client.post(path, headers={"X-CSRF-Token": token, "Origin": "https://evil.example"})
        assert cross.status_code == 403
        assert incident_status(incident_id) == ("open", None)
        assert timeline(incident_id) == before

        done = client.post(path, headers={"X-CSRF-Token": token, "Origin": dashboard.url})
        assert done.status_code == 200
        body = done.json()
        assert body["acknowledged"] is True
        assert body["incident"]["status"] == "acknowledged"
        assert body["incident"]["acknowledged_by"] == dashboard.user
        assert incident_status(incident_id) == ("acknowledged", dashboard.user)
        assert timeline(incident_id)[-1] == ("acknowledged", dashboard.user)
        assert ("acknowledged", dashboard.user) in [
            (e["kind"], e["actor"]) for e in body["incident"]["timeline"]
        ]
        # Twice is harmless: nothing changes, and the answer says so.
        again = client.post(path, headers={"X-CSRF-Token": token})
        assert again.status_code == 200 and again.json()["acknowledged"] is False
        assert (
            client.post(
                "/api/incidents/999999/acknowledge", headers={"X-CSRF-Token": token}
            ).status_code
            == 404
        )


def test_logout_needs_the_token_and_clears_the_cookie(dashboard: Dashboard) -> None:
    client, token = dashboard.login()
    with closing(client):
        assert client.post("/logout").status_code == 403
        out = client.post("/logout", data={"csrf_token": token})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert 'eventops_session=""' in out.headers["set-cookie"]
        assert client.get("/api/checks").status_code == 401


def test_the_check_list_shows_states_heartbeats_uptime_and_the_chart_from_outcomes(
    dashboard: Dashboard, clean_db: str
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    checks = [
        {"name": n, "url": "http://127.0.0.1:9/", "interval": "1m", "timeout": "5s", "group": g}
        for n, g in (("stripe", "payments"), ("supabase", "db"), ("mapbox", "maps"))
    ]
    config = make_config(checks=checks)
    with session_scope() as session:
        sync_checks(session, config, now=now - timedelta(minutes=10))
        ids = {name: id_ for name, id_ in session.execute(select(Check.name, Check.id))}
    results = []
    for minute in range(10, 0, -1):
        slot = now - timedelta(minutes=minute)
        results.append(ProbeResult(ids["stripe"], slot, slot, "up", 100.0 + minute, 200))
        down = minute <= 3
        results.append(
            ProbeResult(
                ids["supabase"],
                slot,
                slot,
                "down" if down else "up",
                50.0,
                503 if down else 200,
                "bad_status" if down else None,
            )
        )
    with session_scope() as session:
        record_outcomes(session, results, config, now=now)

    client, _ = dashboard.login()
    with closing(client):
        listing = client.get("/api/checks").json()
        by_name = {item["name"]: item for item in listing["items"]}
        assert list(by_name) == ["mapbox", "stripe", "supabase"]
        assert by_name["supabase"]["state"] == "down"
        assert by_name["supabase"]["last_reason"] == "bad_status"
        assert by_name["supabase"]["beats"][-3:] == ["down", "down", "down"]
        assert by_name["supabase"]["uptime_24h"] == pytest.approx(0.7)
        assert by_name["stripe"]["state"] == "up" and by_name["stripe"]["uptime_24h"] == 1.0
        assert by_name["mapbox"]["state"] == "unknown" and by_name["mapbox"]["beats"] == []
        assert listing["counts"]["down"] == 1 and listing["counts"]["total"] == 3

        only_down = client.get("/api/checks", params={"state": "down"}).json()
        assert [i["name"] for i in only_down["items"]] == ["supabase"]
        in_group = client.get("/api/checks", params={"group": "payments"}).json()
        assert [i["name"] for i in in_group["items"]] == ["stripe"]
        assert client.get("/api/checks", params={"state": "sideways"}).status_code == 422

        series = client.get(f"/api/checks/{ids['supabase']}/series?window=1h").json()
        assert sum(p["total"] for p in series["points"]) == 10
        assert series["uptime"] == pytest.approx(0.7)
        assert series["source"] == "outcomes"
        # A day's chart reads the rollups (the not-yet-rolled edge from raw outcomes).
        day = client.get(f"/api/checks/{ids['supabase']}/series?window=24h").json()
        assert day["source"] == "rollups (minute)", day["source"]
        assert sum(p["total"] for p in day["points"]) == 10
        assert sum(p["up"] for p in day["points"]) == 7
        assert len(day["points"]) <= 120
        detail = client.get(f"/api/checks/{ids['supabase']}").json()
        assert detail["uptime"]["24h"] == pytest.approx(0.7)

        summary = client.get("/api/summary").json()
        assert summary["counts"]["down"] == 1
        titles = [i["title"] for i in summary["incidents"]["items"]]
        assert any("supabase" in title for title in titles)
        assert {q["name"] for q in summary["workers"]["queues"]} >= {"probes", "pipeline"}


def test_the_app_mounts_the_ingestion_and_metrics_routers_with_their_own_auth(
    dashboard: Dashboard,
) -> None:
    with dashboard.client() as client:
        # Machines call these without a dashboard session; each checks its own token.
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "eventops_" in metrics.text
        beacon = client.post("/ingest/vitals", json=[])
        assert beacon.status_code in (401, 403), beacon.text


def test_reports_are_listed_and_served_with_their_charts_behind_the_login(
    dashboard: Dashboard,
) -> None:
    # A finished report folder as the reports duty publishes it (core/reports/registry.py).
    folder = dashboard.var_dir / "reports" / "weekly-2026-w48"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text('<h1>Week 48</h1><img src="uptime.png">')
    (folder / "report.md").write_text("# Week 48\n")
    (folder / "uptime.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (folder / "meta.json").write_text(
        json.dumps(
            {"name": "weekly-2026-w48", "kind": "weekly", "created_at": "2026-11-27T09:00:00+00:00"}
        )
    )
    with dashboard.client() as anonymous:
        assert anonymous.get("/reports/weekly-2026-w48/index.html").status_code == 303
    client, _ = dashboard.login()
    with closing(client):
        listed = client.get("/api/reports").json()
        assert listed["configured"] is True
        (report,) = [r for r in listed["items"] if r["name"] == "weekly-2026-w48"]
        assert report["html_url"] == "/reports/weekly-2026-w48/index.html"
        page = client.get(report["html_url"])
        assert page.status_code == 200 and "Week 48" in page.text
        assert "script-src" not in page.headers["content-security-policy"]
        chart = client.get("/reports/weekly-2026-w48/uptime.png")
        assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")
        assert client.get(report["md_url"]).text == "# Week 48\n"
        for bad in ("meta.json.bak", ".hidden", "..%2F..%2Fdashboard.password"):
            assert client.get(f"/reports/weekly-2026-w48/{bad}").status_code == 404, bad
        assert client.get("/reports/nope/index.html").status_code == 404
