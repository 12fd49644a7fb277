"""The dashboard with 100,000 checks on real Postgres: keyset pages, counts by state from one
grouped query, server-side filters, and page queries that read indexes, never a whole table.
No timing assertions (bench/ times `latest_status_page`); the plans show the work is bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from core.dashboard import explain_latest_status_page, latest_status_page, state_counts
from models import db
from models.db import session_scope
from tests.dashboard_server import Dashboard

N = 100_000
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def expected_state(i: int) -> str:
    """The state the generator gives check number i (see the SQL below)."""
    if i % 50 == 7:
        return "disabled"
    return {0: "down", 1: "failing", 2: "unknown"}.get(i % 10, "up")


@pytest.fixture(scope="module")
def many_checks(database_url: str) -> Iterator[str]:
    """100,000 checks in 20 groups plus three outcomes each, inserted set-based."""
    db.configure(database_url)
    tables = "checks, outcomes, incidents"
    with db.get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        conn.execute(
            text(
                """
                INSERT INTO checks (name, kind, url, method, expected_status, interval_s,
                    timeout_s, max_body_bytes, alert_threshold, recovery_threshold, severity,
                    enabled, group_name, depends_on, category, next_due_at, dispatch_attempts,
                    status, consecutive_failures, consecutive_successes, last_latency_ms)
                SELECT 'svc-' || lpad(i::text, 6, '0'), 'http', 'http://127.0.0.1:9/', 'GET',
                    '[200]', 60, 5, 1048576, 1, 2, 'critical',
                    i % 50 <> 7, 'group-' || lpad((i % 20)::text, 2, '0'), '[]',
                    'availability', :t0, 0,
                    CASE i % 10 WHEN 0 THEN 'down' WHEN 1 THEN 'failing'
                        WHEN 2 THEN 'unknown' ELSE 'up' END,
                    0, 0, 40 + i % 100
                FROM generate_series(0, :n - 1) AS i
                """
            ),
            {"t0": T0, "n": N},
        )
        conn.execute(
            text(
                """
                INSERT INTO outcomes (check_id, slot, observed_at, status, latency_ms)
                SELECT c.id, :t0 - make_interval(mins => k), :t0 - make_interval(mins => k),
                    CASE WHEN c.status = 'down' THEN 'down' ELSE 'up' END, 42
                FROM checks c, generate_series(1, 3) AS k
                """
            ),
            {"t0": T0},
        )
        conn.execute(text("ANALYZE checks"))
        conn.execute(text("ANALYZE outcomes"))
    yield database_url
    with db.get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="module")
def dashboard_database(many_checks: str) -> str:
    """The shared `dashboard` fixture serves the 100,000 checks."""
    return many_checks


def test_counts_by_state_cover_all_100k_checks_from_one_grouped_query(many_checks: str) -> None:
    expected: dict[str, int] = {}
    for i in range(N):
        state = expected_state(i)
        expected[state] = expected.get(state, 0) + 1
    with session_scope() as session:
        counts = state_counts(session)
        in_group = state_counts(session, group="group-03")
    assert counts["total"] == N
    assert {s: counts[s] for s in expected} == expected
    assert in_group["total"] == N // 20


def test_the_list_api_pages_through_100k_checks_by_keyset_with_server_side_filters(
    dashboard: Dashboard,
) -> None:
    client, _ = dashboard.login()
    with closing(client):
        first = client.get("/api/checks", params={"limit": 50}).json()
        assert [i["name"] for i in first["items"]] == [f"svc-{i:06d}" for i in range(50)]
        assert first["next_after"] == "svc-000049"
        assert first["counts"]["total"] == N
        assert len(first["items"][0]["beats"]) == 3

        second = client.get(
            "/api/checks", params={"limit": 50, "after": first["next_after"]}
        ).json()
        assert [i["name"] for i in second["items"]] == [f"svc-{i:06d}" for i in range(50, 100)]

        down = client.get("/api/checks", params={"state": "down", "limit": 20}).json()
        assert [i["name"] for i in down["items"]] == [
            f"svc-{i:06d}" for i in range(0, N) if expected_state(i) == "down"
        ][:20]
        assert all(i["beats"] == ["down"] * 3 for i in down["items"])

        grouped = client.get(
            "/api/checks", params={"group": "group-05", "state": "up", "limit": 10}
        ).json()
        assert all(i["group"] == "group-05" and i["state"] == "up" for i in grouped["items"])
        assert grouped["counts"]["total"] == N // 20

        prefix = client.get("/api/checks", params={"q": "svc-09999", "limit": 50}).json()
        assert [i["name"] for i in prefix["items"]] == [f"svc-{i:06d}" for i in range(99990, N)]
        assert prefix["next_after"] is None
        assert prefix["counts"]["total"] == 10

        # The last page of a filter ends the walk.
        last = client.get("/api/checks", params={"after": "svc-099998"}).json()
        assert [i["name"] for i in last["items"]] == ["svc-099999"]
        assert last["next_after"] is None


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"after": "svc-050000"},
        {"state": "down"},
        {"state": "up", "after": "svc-090000"},
        {"group": "group-07"},
        {"name_prefix": "svc-0123"},
    ],
    ids=["first-page", "later-page", "state", "state-later-page", "group", "name-prefix"],
)
def test_the_latest_status_page_query_reads_indexes_not_the_tables(
    many_checks: str, filters: dict[str, str]
) -> None:
    with session_scope() as session:
        plan = explain_latest_status_page(session, **filters)
        page = latest_status_page(session, **filters)
        # Outcomes are partitioned by day: Postgres rightly seq-scans an EMPTY partition (a
        # free read), so the rule is: no sequential scan of any outcomes table holding rows.
        scanned = set(re.findall(r"Seq Scan on (outcomes\w*)", plan))
        holding_rows = {
            name
            for name in scanned
            if session.execute(text(f'SELECT 1 FROM ONLY "{name}" LIMIT 1')).first()
        }
    assert page.items, plan
    assert holding_rows == set(), plan
    assert re.search(r"Index (Only )?Scan (Backward )?using \S+ on outcomes", plan), plan
    assert "Seq Scan on checks" not in plan, plan
