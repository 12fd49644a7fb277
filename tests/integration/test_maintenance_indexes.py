"""Index, vacuum and query reports on a real fixture database: each problem planted there is
found with the SQL that fixes it, and the safe fixes run only when enabled and in window."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url, select

from core.backups.tools import Conn
from core.maintenance.indexes import Finding, index_report
from core.maintenance.jobs import in_window, run_report
from core.maintenance.vacuum import vacuum_report
from models.config_maintenance import ActionsWindow, MaintenanceConfig
from models.db import session_scope
from models.maintenance import MaintenanceReport
from models.tables import Silence

# 03:30 in Auckland (NZDT, UTC+13): inside the default 02:00-05:00 window.
IN_WINDOW = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
# 15:00 in Auckland: business hours.
OUT_OF_WINDOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
ZONE = "Pacific/Auckland"

FIXTURE = """
CREATE TABLE parents (id int PRIMARY KEY);
CREATE TABLE children (
    id int PRIMARY KEY,
    parent_id int REFERENCES parents (id),
    email text,
    city text,
    created_at timestamptz DEFAULT now()
);
INSERT INTO parents SELECT g FROM generate_series(1, 100) g;
INSERT INTO children SELECT g, 1 + g % 100, 'u' || g || '@x.nz', 'city' || g % 10
    FROM generate_series(1, 5000) g;
CREATE INDEX children_created_idx ON children (created_at);
CREATE INDEX children_email_a ON children (email);
CREATE INDEX children_email_b ON children (email);
CREATE INDEX children_city_idx ON children (city);
CREATE INDEX children_city_created_idx ON children (city, created_at);
CREATE TABLE codes (id int PRIMARY KEY, code text);
INSERT INTO codes VALUES (1, 'dup'), (2, 'dup'), (3, 'ok');
CREATE TABLE churn (id int PRIMARY KEY, v int);
INSERT INTO churn SELECT g, g FROM generate_series(1, 100000) g;
CREATE INDEX churn_v_idx ON churn (v);
"""


@pytest.fixture
def fixture_db(database_url: str) -> Iterator[str]:
    """A database of its own on the test server, with the planted index problems."""
    name = f"maint_fixture_{uuid.uuid4().hex[:8]}"
    admin = Conn.from_url(database_url).with_db("postgres")
    with admin.connect() as db:
        db.execute(f'CREATE DATABASE "{name}"')
    url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
    try:
        with Conn.from_url(url).connect() as db:
            db.execute(FIXTURE)
            # A failed CREATE INDEX CONCURRENTLY leaves its index behind, INVALID.
            with pytest.raises(psycopg.errors.UniqueViolation):
                db.execute("CREATE UNIQUE INDEX CONCURRENTLY codes_code_key ON codes (code)")
            # Bloat: 90 % of the rows deleted and vacuumed; the index keeps its pages.
            db.execute("DELETE FROM churn WHERE id % 10 <> 0")
            db.execute("VACUUM ANALYZE churn")
            db.execute("ANALYZE children")
        yield url
    finally:
        with admin.connect() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def findings_by(findings: list[Finding]) -> dict[tuple[str, str], Finding]:
    return {(f.kind, f.name): f for f in findings}


def test_unused_duplicate_overlapping_invalid_bloated_and_unindexed_fk_are_found_with_fixes(
    fixture_db: str,
) -> None:
    with Conn.from_url(fixture_db).connect() as db:
        found = findings_by(index_report(db, "platform-db", bloat_ratio=0.5, min_bloat_bytes=0))

    unused = found[("unused", "public.children_created_idx")]
    assert unused.fix == "DROP INDEX CONCURRENTLY public.children_created_idx;"
    assert unused.table == "public.children" and not unused.safe

    duplicate = found[("duplicate", "public.children_email_b")]
    assert duplicate.fix == "DROP INDEX CONCURRENTLY public.children_email_b;"
    assert "public.children_email_a" in duplicate.detail
    # One DROP per index: the duplicate is not also listed as unused.
    assert ("unused", "public.children_email_b") not in found

    overlapping = found[("overlapping", "public.children_city_idx")]
    assert overlapping.fix == "DROP INDEX CONCURRENTLY public.children_city_idx;"
    assert "children_city_created_idx" in overlapping.detail

    invalid = found[("invalid", "public.codes_code_key")]
    assert "INVALID" in invalid.detail and "UNIQUE" in invalid.detail
    # A unique index that failed on duplicates: REINDEX would fail again, so the fix is
    # to clean the rows and rebuild, and it is not run unattended.
    assert "DROP INDEX CONCURRENTLY public.codes_code_key;" in invalid.fix
    assert "CREATE UNIQUE INDEX CONCURRENTLY codes_code_key ON public.codes" in invalid.fix
    assert not invalid.safe

    bloated = found[("bloated", "public.churn_v_idx")]
    assert bloated.fix == "REINDEX INDEX CONCURRENTLY public.churn_v_idx;" and bloated.safe
    assert "estimated from the table statistics" in bloated.detail

    fk = found[("fk-without-index", "children_parent_id_fkey")]
    assert fk.fix == "CREATE INDEX CONCURRENTLY ON public.children (parent_id);"

    # Primary keys and indexes that are fine are not reported.
    names = {name for _, name in found}
    assert "public.children_pkey" not in names and "public.parents_pkey" not in names
    assert ("unused", "public.children_city_created_idx") in found  # never scanned either


def test_with_pgstattuple_installed_bloat_is_measured_not_estimated(fixture_db: str) -> None:
    with Conn.from_url(fixture_db).connect() as db:
        db.execute("CREATE EXTENSION pgstattuple")
        found = findings_by(index_report(db, "platform-db", bloat_ratio=0.5, min_bloat_bytes=0))
    bloated = found[("bloated", "public.churn_v_idx")]
    assert "measured by pgstatindex" in bloated.detail
    assert bloated.fix == "REINDEX INDEX CONCURRENTLY public.churn_v_idx;"
    # A fresh index is about 90 % full and not reported.
    assert ("bloated", "public.children_email_a") not in found


def test_an_invalid_plain_index_gets_a_reindex_that_runs_as_a_safe_fix(
    clean_db: str, fixture_db: str
) -> None:
    with Conn.from_url(fixture_db).connect() as db:
        # Interrupting a concurrent build leaves it invalid; simulate the catalog state a
        # cancelled build leaves (the same flag Postgres itself sets).
        db.execute("CREATE INDEX children_email_c ON children (email)")
        db.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'children_email_c'::regclass"
        )
        found = findings_by(index_report(db, "platform-db"))
    invalid = found[("invalid", "public.children_email_c")]
    assert invalid.fix == "REINDEX INDEX CONCURRENTLY public.children_email_c;" and invalid.safe

    config = MaintenanceConfig(apply_fixes=True, min_index_bloat_bytes=0)
    summary = run_report(
        "indexes", {"platform-db": fixture_db}, session_scope, config, ZONE, IN_WINDOW
    )
    assert summary["platform-db"]["actions"] >= 2  # the REINDEX of the invalid and the bloated
    with Conn.from_url(fixture_db).connect() as db:
        valid = db.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'children_email_c'::regclass"
        ).fetchone()
        invalid_left = db.execute(
            "SELECT count(*) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " WHERE NOT x.indisvalid AND i.relname <> 'codes_code_key'"
        ).fetchone()
    assert valid == (True,) and invalid_left == (0,)
    with session_scope() as session:
        report = session.scalars(select(MaintenanceReport)).one()
        silence = session.scalars(select(Silence)).one()
    ran = [a["sql"] for a in report.actions]
    assert "REINDEX INDEX CONCURRENTLY public.children_email_c;" in ran
    assert "REINDEX INDEX CONCURRENTLY public.churn_v_idx;" in ran
    assert not any("codes_code_key" in sql or "DROP" in sql for sql in ran)
    # The work ran inside a silence over that database's subjects, ended afterwards.
    assert silence.matchers == ["subject=~platform-db(:.*)?"]
    assert silence.ends_at <= datetime.now(UTC)


def test_by_default_the_report_only_reports(clean_db: str, fixture_db: str) -> None:
    summary = run_report(
        "indexes", {"platform-db": fixture_db}, session_scope, MaintenanceConfig(), ZONE, IN_WINDOW
    )
    assert summary["platform-db"]["actions"] == 0
    assert {"unused", "duplicate", "overlapping", "invalid", "fk-without-index"} <= set(
        summary["platform-db"]["kinds"]
    )
    with session_scope() as session:
        report = session.scalars(select(MaintenanceReport)).one()
    assert report.actions == []
    assert "DROP INDEX CONCURRENTLY public.children_created_idx;" in report.text


def test_fixes_wait_for_the_quiet_window(clean_db: str, fixture_db: str) -> None:
    config = MaintenanceConfig(apply_fixes=True, min_index_bloat_bytes=0)
    summary = run_report(
        "indexes", {"platform-db": fixture_db}, session_scope, config, ZONE, OUT_OF_WINDOW
    )
    assert summary["platform-db"]["actions"] == 0
    with session_scope() as session:
        report = session.scalars(select(MaintenanceReport)).one()
        assert session.scalars(select(Silence)).first() is None
    (skipped,) = report.actions
    assert "outside the actions window 02:00-05:00" in skipped["skipped"]
    assert "REINDEX INDEX CONCURRENTLY public.churn_v_idx;" in skipped["pending"]


def test_the_window_may_wrap_past_midnight() -> None:
    window = ActionsWindow(start="23:00", end="04:00")
    assert in_window(window, "UTC", datetime(2026, 1, 1, 23, 30, tzinfo=UTC))
    assert in_window(window, "UTC", datetime(2026, 1, 1, 3, 59, tzinfo=UTC))
    assert not in_window(window, "UTC", datetime(2026, 1, 1, 12, 0, tzinfo=UTC))


def test_dead_tuples_call_for_vacuum_and_changed_rows_for_analyze(fixture_db: str) -> None:
    with Conn.from_url(fixture_db).connect() as db:
        db.execute("CREATE TABLE dead (id int)")
        db.execute("INSERT INTO dead SELECT generate_series(1, 20000)")
        db.execute("ANALYZE dead")
        db.execute("DELETE FROM dead WHERE id <= 15000")
        db.execute("CREATE TABLE fresh (id int)")
        db.execute("INSERT INTO fresh SELECT generate_series(1, 5000)")
        db.execute("SELECT pg_stat_force_next_flush()")
        found = findings_by(vacuum_report(db, "platform-db"))
    vacuum = found[("needs-vacuum", "public.dead")]
    assert vacuum.fix == "VACUUM (ANALYZE) public.dead;" and vacuum.safe
    analyze = found[("stale-statistics", "public.fresh")]
    assert analyze.fix == "ANALYZE public.fresh;"
    assert ("needs-vacuum", "public.children") not in found


def test_reports_are_one_per_database_and_slot(
    clean_db: str, fixture_db: str, tmp_path: Path
) -> None:
    for _ in range(2):
        run_report(
            "vacuum",
            {"platform-db": fixture_db},
            session_scope,
            MaintenanceConfig(),
            ZONE,
            IN_WINDOW,
        )
    with session_scope() as session:
        assert len(session.scalars(select(MaintenanceReport)).all()) == 1
