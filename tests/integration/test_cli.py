"""The CLI against real Postgres: what people type at 3 a.m. does what it says."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner, Result
from sqlalchemy import select

from core.clock import utcnow
from core.incidents import Problem, raise_problem
from core.schedule import sync_checks
from models.db import session_scope
from models.tables import Check, IncidentEvent, Silence
from tests.conftest import make_config
from workers.cli import main


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def open_incident() -> int:
    config = make_config()
    with session_scope() as session:
        sync_checks(session, config)
        incident_id = raise_problem(
            session,
            Problem(
                fingerprint="check:api",
                title="api is down",
                severity="critical",
                summary="api: bad_status",
                labels={"check": "api", "group": "api"},
            ),
            config,
        )
    assert incident_id is not None
    return incident_id


def test_incidents_can_be_listed_acknowledged_noted_resolved_and_reopened(clean_db: str) -> None:
    incident_id = open_incident()
    listed = json.loads(cli("incidents", "list", "--json").output)
    assert [(i["id"], i["status"]) for i in listed] == [(incident_id, "open")]

    assert cli("incidents", "ack", str(incident_id), "--by", "ana").output.strip() == (
        f"#{incident_id} acknowledged"
    )
    assert "was not open" in cli("incidents", "ack", str(incident_id)).output
    assert cli("incidents", "note", str(incident_id), "rolled back", "--by", "ana").exit_code == 0
    assert cli("incidents", "resolve", str(incident_id), "--by", "ana").exit_code == 0
    assert cli("incidents", "list").output.strip() == "no open incidents"
    assert "reopened" in cli("incidents", "reopen", str(incident_id), "--by", "bo").output

    with session_scope() as session:
        timeline = session.execute(
            select(IncidentEvent.kind, IncidentEvent.actor)
            .where(IncidentEvent.incident_id == incident_id)
            .order_by(IncidentEvent.id)
        ).all()
    assert [tuple(t) for t in timeline][2:] == [
        ("acknowledged", "ana"),
        ("note", "ana"),
        ("resolved", "ana"),
        ("reopened", "bo"),
    ]


def test_the_postmortem_command_prints_a_markdown_draft(clean_db: str) -> None:
    incident_id = open_incident()
    cli("incidents", "resolve", str(incident_id))
    result = cli("incidents", "postmortem", str(incident_id))
    assert result.exit_code == 0
    assert result.output.startswith(f"# Post-mortem: #{incident_id} api is down")


def test_an_unknown_incident_is_a_clear_error_with_exit_code_3(clean_db: str) -> None:
    result = CliRunner().invoke(main, ["incidents", "ack", "999"])
    assert result.exit_code == 3
    assert "no incident #999" in result.output


def test_silences_can_be_added_listed_and_expired(clean_db: str) -> None:
    added = cli(
        "silences",
        "add",
        "check=stripe",
        "group=~pay.*",
        "--for",
        "2h",
        "--comment",
        "Stripe maintenance",
        "--by",
        "ana",
    )
    assert added.exit_code == 0 and added.output.startswith("silence #1 until")
    listed = json.loads(cli("silences", "list", "--json").output)
    assert listed[0]["matchers"] == ["check=stripe", "group=~pay.*"]
    assert listed[0]["comment"] == "Stripe maintenance"
    with session_scope() as session:
        silence = session.scalars(select(Silence)).one()
        assert silence.ends_at - silence.starts_at == timedelta(hours=2)
    assert cli("silences", "expire", "1").output.strip() == "silence #1 ended"
    assert cli("silences", "list").output.strip() == "no active silences"


def test_a_malformed_silence_matcher_is_refused_and_nothing_is_stored(clean_db: str) -> None:
    result = CliRunner().invoke(main, ["silences", "add", "check~stripe"])
    assert result.exit_code == 2
    assert "is not a matcher" in result.output
    with session_scope() as session:
        assert session.scalars(select(Silence)).all() == []


def test_checks_run_makes_a_check_due_now(clean_db: str) -> None:
    with session_scope() as session:
        sync_checks(session, make_config(), now=utcnow() - timedelta(hours=1))
        session.execute(Check.__table__.update().values(next_due_at=utcnow() + timedelta(hours=1)))
    assert cli("checks", "run", "api").output.strip() == "api: due now"
    with session_scope() as session:
        due = session.scalars(select(Check.next_due_at)).one()
    assert due <= utcnow()
    missing = CliRunner().invoke(main, ["checks", "run", "nope"])
    assert missing.exit_code == 3 and "no check named 'nope'" in missing.output
    listed = json.loads(cli("checks", "list", "--json").output)
    assert [c["name"] for c in listed] == ["api"]
