"""`eventops audit` and `eventops compliance` in process on real Postgres: verify and anchor,
scan, the monthly report in Markdown and HTML (with the detection duty's tables when they
exist), the report list, and a tampered chain failing verification with exit 1."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text

from core import incidents
from core.audit import maintenance
from core.incidents import Problem, raise_problem
from core.silences import create_silence
from models.config import load_config
from models.db import session_scope
from tests.unit.test_vulnerability_matching import FIXTURES
from workers import settings as settings_module
from workers.cli_compliance import audit, compliance


@pytest.fixture
def configured(clean_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    lockfile = tmp_path / "package-lock.json"
    shutil.copy(FIXTURES / "npm" / "package-lock.json", lockfile)
    config = {
        "platform_url": "http://127.0.0.1:9",
        "channels": [{"name": "hook", "url": "json://127.0.0.1:9/hook"}],
        "policies": {"critical": {"steps": [{"after": "0s", "channels": ["hook"]}]}},
        "compliance": {
            "vulnerabilities": {
                "advisories": str(FIXTURES / "advisories"),
                "npm_lockfiles": [str(lockfile)],
            }
        },
    }
    path = tmp_path / "eventops.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("EVENTOPS_CONFIG_FILE", str(path))
    monkeypatch.setenv("EVENTOPS_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("USER", "operator-ana")
    settings_module.get_settings.cache_clear()
    settings_module.get_config.cache_clear()
    yield tmp_path / "var"
    settings_module.get_settings.cache_clear()
    settings_module.get_config.cache_clear()


def test_cli_verifies_scans_reports_and_catches_tampering(configured: Path) -> None:
    config = load_config(Path(settings_module.get_settings().config_file))
    with session_scope() as session:
        create_silence(session, ["check=api"], by="operator-ana", duration=timedelta(hours=1))
        incident_id = raise_problem(
            session,
            Problem(fingerprint="x:1", title="API down", severity="critical", summary="down"),
            config,
        )
    assert incident_id is not None
    incidents.acknowledge(incident_id, "operator-ana")
    runner = CliRunner()

    verified = runner.invoke(audit, ["verify", "--anchor"])
    assert verified.exit_code == 0, verified.output
    assert "audit chain OK: 2 rows" in verified.output
    assert (configured / "audit" / "anchors.jsonl").exists()

    logged = runner.invoke(audit, ["log", "--action", "incident.*"])
    assert "incident.acknowledge" in logged.output and "operator-ana" in logged.output

    scanned = runner.invoke(compliance, ["scan"])
    assert scanned.exit_code == 0, scanned.output
    assert '"incidents": 2' in scanned.output  # lodash and minimist

    with session_scope() as session:
        has_security = session.scalar(text("SELECT to_regclass('security_findings') IS NOT NULL"))
        if has_security:
            session.execute(
                text(
                    "INSERT INTO security_findings (detector, kind, severity, subject, summary,"
                    " evidence, window_start, window_end, first_seen, last_seen)"
                    " VALUES ('failed_logins', 'brute_force', 'critical', 'ip:203.0.113.66',"
                    " 'x', '{}', now(), now(), now(), now())"
                )
            )
    month = datetime.now(UTC).strftime("%Y-%m")
    written = runner.invoke(compliance, ["report", "--month", month])
    assert written.exit_code == 0, written.output
    markdown = configured / "reports" / f"security-audit-{month}.md"
    page = configured / "reports" / f"security-audit-{month}.html"
    body = markdown.read_text()
    assert "## Audit trail" in body and "Chain: verified" in body
    assert "lodash" in body and "4.17.19" in body
    assert "incident.acknowledge" in body
    if has_security:
        assert "| critical | brute_force | 1 |" in body
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "<table>" in html and "lodash" in html

    listed = runner.invoke(compliance, ["reports"])
    assert month in listed.output

    bad_month = runner.invoke(compliance, ["report", "--month", "November"])
    assert bad_month.exit_code == 2 and "--month" in bad_month.output

    with session_scope() as session:
        maintenance(session)
        session.execute(text("UPDATE audit_log SET actor = 'mallory' WHERE id = 1"))
    broken = runner.invoke(audit, ["verify"])
    assert broken.exit_code == 1
    assert "first bad row 1 (edited)" in broken.output

    accepted = runner.invoke(audit, ["accept", "--reason", "test edit, investigated"])
    assert accepted.exit_code == 0, accepted.output
    assert "the chain verifies again" in accepted.output
    assert runner.invoke(audit, ["verify"]).exit_code == 0
    again = runner.invoke(audit, ["accept", "--reason", "twice"])
    assert again.exit_code == 1 and "nothing to accept" in again.output
