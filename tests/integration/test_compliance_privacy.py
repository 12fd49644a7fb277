"""Privacy checks against a generated demo platform database on real Postgres: access-logging
gaps, data kept past retention, overdue data subject requests, and their incidents."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.backups.tools import Conn
from core.compliance.findings import open_findings
from core.compliance.privacy import DSR_FINGERPRINT, RETENTION_FINGERPRINT, run_privacy_checks
from demo.platform_db import apply_schema, generate
from models.db import session_scope
from models.tables import Incident
from tests.conftest import make_config

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def make_db(postgres_server_url: str) -> Iterator[Callable[[], Conn]]:
    server = Conn.from_url(postgres_server_url)
    names: list[str] = []

    def create() -> Conn:
        name = f"eventops_privacy_{uuid.uuid4().hex[:10]}"
        with server.connect() as db:
            db.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return server.with_db(name)

    yield create
    with server.connect() as db:
        for name in names:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def platform(make_db: Callable[[], Conn]) -> Conn:
    conn = make_db()
    apply_schema(conn)
    generate(conn, scale=0.05, seed=7, days=30, now=NOW)
    return conn


def config_for(**compliance: object):  # type: ignore[no-untyped-def]
    return make_config(compliance=compliance)


def findings_by_key(check: str) -> dict[str, object]:
    with session_scope() as session:
        return {f.key: f for f in open_findings(session, check)}


def test_personal_tables_without_access_logging_are_gaps(clean_db: str, platform: Conn) -> None:
    with session_scope() as session:
        run_privacy_checks(session, config_for(), platform, NOW)
    found = findings_by_key("access-logging")
    # The demo logs reads of users, bookings, payments and events, never of vendors or reviews.
    assert {"gap:vendors", "gap:reviews"} <= set(found)
    assert not {"gap:users", "gap:bookings"} & set(found)
    assert found["gap:vendors"].severity == "high"  # type: ignore[attr-defined]


def test_a_table_with_personal_columns_outside_the_logged_set_is_a_finding(
    clean_db: str, platform: Conn
) -> None:
    config = config_for(
        access_logging={"personal_tables": ["users", "bookings", "payments", "ghost_table"]}
    )
    with session_scope() as session:
        run_privacy_checks(session, config, platform, NOW)
    found = findings_by_key("access-logging")
    assert "missing:ghost_table" in found
    # vendors has lat/lon (a business location); it is not listed now, so it is flagged.
    assert "unlisted:vendors" in found
    assert "unlisted:users" not in found and "unlisted:auth_events" not in found


def test_rows_kept_past_retention_are_counted_and_raise_an_incident(
    clean_db: str, platform: Conn
) -> None:
    with Conn.connect(platform) as db:
        expected = db.execute(
            "SELECT count(*) FROM auth_events WHERE at < %s", (NOW - timedelta(days=14),)
        ).fetchone()[0]  # type: ignore[index]
    assert expected > 0
    config = config_for(
        retention=[
            {"table": "auth_events", "column": "at", "keep": "14d"},
            {"table": "payments", "column": "created_at", "keep": "3650d"},
            {"table": "no_such_table", "column": "at", "keep": "1d"},
        ]
    )
    with session_scope() as session:
        run_privacy_checks(session, config, platform, NOW)
    found = findings_by_key("retention")
    assert set(found) == {"expired:auth_events.at", "unchecked:no_such_table.at"}
    assert found["expired:auth_events.at"].evidence["rows"] == expected  # type: ignore[attr-defined]
    with session_scope() as session:
        incident = session.scalars(
            select(Incident).where(Incident.fingerprint == RETENTION_FINGERPRINT)
        ).one()
    assert incident.status == "open" and "auth_events" in (incident.summary or "")


def test_a_retention_rule_that_fails_to_run_keeps_its_finding_and_incident_open(
    clean_db: str, platform: Conn
) -> None:
    rule = {"table": "auth_events", "column": "at", "keep": "14d"}
    with session_scope() as session:
        run_privacy_checks(session, config_for(retention=[rule]), platform, NOW)
    assert set(findings_by_key("retention")) == {"expired:auth_events.at"}
    # The next day the rule's query fails (a column renamed by a migration): nothing is known
    # about the rows, so nothing may resolve.
    broken = {**rule, "where": "no_such_column IS NULL"}
    with session_scope() as session:
        summary = run_privacy_checks(
            session, config_for(retention=[broken]), platform, NOW + timedelta(days=1)
        )
    assert summary["retention"]["resolved"] == 0
    assert set(findings_by_key("retention")) == {
        "expired:auth_events.at",
        "unchecked:auth_events.at",
    }
    with session_scope() as session:
        incident = session.scalars(
            select(Incident).where(Incident.fingerprint == RETENTION_FINGERPRINT)
        ).one()
    assert incident.status == "open"


def test_overdue_data_subject_requests_are_found_by_their_regime(
    clean_db: str, platform: Conn
) -> None:
    with session_scope() as session:
        run_privacy_checks(session, config_for(), platform, NOW)
    found = findings_by_key("dsr")
    overdue = {f.evidence["regime"]: f for k, f in found.items() if k.startswith("overdue:")}  # type: ignore[attr-defined]
    assert set(overdue) == {"nz", "gdpr"}
    assert overdue["nz"].evidence["kind"] == "access"  # type: ignore[attr-defined]
    assert overdue["gdpr"].evidence["kind"] == "deletion"  # type: ignore[attr-defined]
    assert any(k.startswith("due-soon:") for k in found)
    # Answered requests are never findings, however old.
    assert len(found) == 3
    with session_scope() as session:
        incident = session.scalars(
            select(Incident).where(Incident.fingerprint == DSR_FINGERPRINT)
        ).one()
    assert incident.severity == "warning" and incident.title == "2 data subject requests overdue"


def test_answering_the_requests_resolves_findings_and_incident(
    clean_db: str, make_db: Callable[[], Conn]
) -> None:
    conn = make_db()
    apply_schema(conn)
    generate(conn, scale=0.02, seed=3, days=10, now=NOW)
    with session_scope() as session:
        run_privacy_checks(session, config_for(), conn, NOW)
    with conn.connect() as db:
        db.execute("UPDATE data_subject_requests SET completed_at = %s", (NOW,))
    later = NOW + timedelta(hours=1)
    with session_scope() as session:
        summary = run_privacy_checks(session, config_for(), conn, later)
    assert summary["dsr"]["findings"] == 0 and summary["dsr"]["resolved"] == 3
    with session_scope() as session:
        incident = session.scalars(
            select(Incident).where(Incident.fingerprint == DSR_FINGERPRINT)
        ).one()
    assert incident.status == "resolved"
