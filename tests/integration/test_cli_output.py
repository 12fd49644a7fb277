"""The CLI's tables, `incidents show`, `--json` and exit codes that mean something."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import select, update

from core.clock import utcnow
from core.incidents import acknowledge
from core.pipeline import record_outcomes
from core.probing import ProbeResult
from core.schedule import sync_checks
from models.db import session_scope
from models.tables import Check
from tests.conftest import make_config
from tests.integration.test_cli import open_incident
from tests.processes import ROOT, eventops, wait_for
from workers.cli import main
from workers.cli_output import EXIT_NOT_FOUND, EXIT_TIMEOUT, EXIT_USAGE


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_incidents_show_prints_the_timeline_in_order(clean_db: str) -> None:
    incident_id = open_incident()
    acknowledge(incident_id, by="ana")
    assert (
        cli("incidents", "note", str(incident_id), "rolled back deploy 41", "--by", "bo").exit_code
        == 0
    )

    shown = cli("incidents", "show", str(incident_id))
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0] == f"#{incident_id} api is down"
    assert "critical, acknowledged" in lines[1]
    timeline = shown.output[shown.output.index("timeline") :]
    assert timeline.index("acknowledged") < timeline.index("rolled back deploy 41")
    assert "\x1b[" not in shown.output  # no colour codes when piped

    data = json.loads(cli("incidents", "show", str(incident_id), "--json").output)
    kinds = [event["kind"] for event in data["timeline"]]
    assert kinds[-2:] == ["acknowledged", "note"]
    assert data["timeline"][-1]["actor"] == "bo"
    assert data["acknowledged_by"] == "ana"


def test_lists_are_tables_with_one_row_per_item(clean_db: str) -> None:
    config = make_config(
        checks=[
            {"name": f"check-{i}", "url": "http://127.0.0.1:9/", "interval": "1m", "timeout": "2s"}
            for i in range(3)
        ]
    )
    with session_scope() as session:
        sync_checks(session, config)
    output = cli("checks", "list").output.splitlines()
    assert output[0].split()[:3] == ["check", "status", "every"]
    rows = [line.split() for line in output[1:] if line.strip()]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (f"check-{i}", "unknown", "60s") for i in range(3)
    ]

    incident_id = open_incident()
    listed = cli("incidents", "list").output.splitlines()
    assert listed[0].split() == ["id", "severity", "status", "title", "since", "notified"]
    assert listed[1].split()[:4] == [f"#{incident_id}", "critical", "open", "api"]

    tasks = cli("tasks", "list").output.splitlines()
    assert tasks[0].split() == ["task", "queue"]
    assert ["probes.run_batch", "probes"] in [line.split() for line in tasks]
    as_json = json.loads(cli("tasks", "list", "--json").output)
    assert {"name": "probes.run_batch", "queue": "probes"} in as_json


def test_not_found_is_exit_3_and_bad_usage_exit_2(clean_db: str) -> None:
    for args in (
        ["incidents", "show", "404"],
        ["incidents", "resolve", "404"],
        ["incidents", "postmortem", "404"],
        ["checks", "run", "nope"],
        ["silences", "expire", "404"],
    ):
        result = cli(*args)
        assert result.exit_code == EXIT_NOT_FOUND, (args, result.output)
        assert "404" in result.output or "nope" in result.output
    assert cli("incidents", "show", "not-a-number").exit_code == EXIT_USAGE
    assert cli("tasks", "run", "no.such.task").exit_code == EXIT_USAGE
    # Exit 4 (timed out) is tested with a real broker in tests/integration/test_shell.py.


def test_checks_run_wait_prints_the_outcome_or_times_out_with_exit_4(
    clean_db: str, tmp_path: Path
) -> None:
    config = make_config()
    with session_scope() as session:
        sync_checks(session, config)
    env = {**os.environ, "EVENTOPS_DATABASE_URL": clean_db, "EVENTOPS_VAR_DIR": str(tmp_path)}

    nobody = subprocess.run(
        eventops("checks", "run", "api", "--wait", "1"),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert nobody.returncode == EXIT_TIMEOUT, nobody.stderr
    assert "no outcome within 1 s" in nobody.stderr

    # Due in an hour again: the command making it due now is what the test waits for.
    with session_scope() as session:
        session.execute(
            update(Check)
            .where(Check.name == "api")
            .values(next_due_at=utcnow() + timedelta(hours=1))
        )
    waiting = checks_run_waiting("api", env)
    try:
        # The command made the check due; a probe (here, the pipeline called directly, as
        # a worker would) records its outcome.
        wait_for(lambda: due_now("api"), 60, "the check to be made due")
        now = utcnow()
        with session_scope() as session:
            check_id = session.scalars(select(Check.id).where(Check.name == "api")).one()
            record_outcomes(
                session,
                [ProbeResult(check_id, now, now, "down", 31.0, 503, "bad_status", "HTTP 503")],
                config,
                now=now,
            )
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 1, err
    assert out.strip() == "api: down, 31 ms: bad_status"


def test_checks_run_wait_reports_a_passing_probe_of_a_down_check_as_up_and_exits_0(
    clean_db: str, tmp_path: Path
) -> None:
    """A healed service: its probe passes, the check needs one more pass to turn up. The
    command waited for that probe, so it prints the probe's answer and exits on it."""
    config = make_config(
        checks=[
            {
                "name": "api",
                "url": "http://127.0.0.1:9/",
                "interval": "1h",
                "timeout": "2s",
                "recovery_threshold": 2,
            }
        ]
    )
    with session_scope() as session:
        sync_checks(session, config)
        check_id = session.scalars(select(Check.id).where(Check.name == "api")).one()
        earlier = utcnow() - timedelta(minutes=5)
        record_outcomes(
            session,
            [ProbeResult(check_id, earlier, earlier, "down", 5.0, 503, "bad_status", "HTTP 503")],
            config,
            now=earlier,
        )
        session.execute(
            update(Check)
            .where(Check.id == check_id)
            .values(next_due_at=utcnow() + timedelta(hours=1))
        )
    env = {**os.environ, "EVENTOPS_DATABASE_URL": clean_db, "EVENTOPS_VAR_DIR": str(tmp_path)}
    waiting = checks_run_waiting("api", env)
    try:
        wait_for(lambda: due_now("api"), 60, "the check to be made due")
        with session_scope() as session:
            slot = session.scalars(select(Check.next_due_at).where(Check.id == check_id)).one()
            record_outcomes(
                session,
                [ProbeResult(check_id, slot, utcnow(), "up", 12.0, 200, None, None)],
                config,
            )
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert out.strip() == "api: up, 12 ms (the check is still down)"
    assert waiting.returncode == 0, err


def checks_run_waiting(name: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """`eventops checks run NAME --wait 60`, started: the test probes, then reads its answer."""
    return subprocess.Popen(
        eventops("checks", "run", name, "--wait", "60"),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def due_now(name: str) -> bool:
    with session_scope() as session:
        due = session.scalars(select(Check.next_due_at).where(Check.name == name)).one()
    return bool(due <= utcnow())
