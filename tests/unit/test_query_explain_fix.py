"""The SQL the weekly query report offers for a slow statement never runs a write:
EXPLAIN ANALYZE executes what it explains."""

from __future__ import annotations

import pytest

from core.maintenance.query_analysis import explain_fix


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM bookings WHERE id = $1",
        "update payments set state = $1 where id = $2",
        "INSERT INTO api_requests (path) VALUES ($1)",
        "WITH gone AS (DELETE FROM sessions RETURNING id) SELECT count(*) FROM gone",
    ],
)
def test_a_write_gets_a_plan_only_explain(query: str) -> None:
    fix = explain_fix(query)
    assert "ANALYZE" not in fix.upper().replace("EXPLAIN ANALYZE WOULD", "")
    assert fix.splitlines()[-1] == f"EXPLAIN {query};"


def test_a_read_gets_explain_analyze_and_a_note_about_its_placeholders() -> None:
    fix = explain_fix("SELECT * FROM vendors WHERE region = $1 ORDER BY name")
    assert fix.splitlines() == [
        "-- replace $1, $2, ... with real values first",
        "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM vendors WHERE region = $1 ORDER BY name;",
    ]
