"""`eventops security ...` against real Postgres: bans, unban, findings, the daily report."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner, Result
from sqlalchemy import select

from core.clock import utcnow
from models.compliance import AuditEntry
from models.db import session_scope
from models.security import SecurityBan, SecurityFinding
from workers.cli import main


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_bans_can_be_listed_and_lifted_and_the_lift_is_audited(clean_db: str) -> None:
    now = utcnow()
    with session_scope() as session:
        session.add(
            SecurityBan(
                kind="ip", value="203.0.113.66", jail="failed_logins", reason="brute force",
                evidence={}, banned_at=now - timedelta(minutes=5), until=now + timedelta(hours=1),
                offence_count=1,
            )
        )  # fmt: skip
    listed = json.loads(cli("security", "bans", "--json").output)
    assert [(b["kind"], b["value"]) for b in listed] == [("ip", "203.0.113.66")]
    result = cli("security", "unban", "203.0.113.66")
    assert result.exit_code == 0 and "lifted 1 ban(s) on ip 203.0.113.66" in result.output
    assert cli("security", "bans").output.strip() == "no active bans"
    assert len(json.loads(cli("security", "bans", "--all", "--json").output)) == 1
    again = cli("security", "unban", "203.0.113.66")
    assert again.exit_code == 1
    with session_scope() as session:
        actions = session.scalars(select(AuditEntry.action)).all()
    assert "security.unban" in actions


def test_findings_and_the_daily_report_are_shown(clean_db: str) -> None:
    now = utcnow()
    with session_scope() as session:
        session.add(
            SecurityFinding(
                detector="signatures", kind="sql_injection", severity="warning",
                subject="ip:203.0.113.200", summary="attack signatures from ip:203.0.113.200",
                evidence={}, window_start=now - timedelta(hours=1), window_end=now,
                first_seen=now, last_seen=now,
            )
        )  # fmt: skip
    shown = cli("security", "findings", "--since", "2h")
    assert "signatures/sql_injection ip:203.0.113.200" in shown.output
    assert cli("security", "findings", "--severity", "critical").output.strip() == "no findings"
    assert cli("security", "findings", "--since", "soon").exit_code == 2
    day = now.astimezone(__import__("zoneinfo").ZoneInfo("Pacific/Auckland")).date()
    report = cli("security", "report", "--day", day.isoformat())
    assert report.output.startswith(f"# Security events, {day}")
    assert "| signatures | warning | 1 |" in report.output
    assert cli("security", "run", "nonsense").exit_code == 2
