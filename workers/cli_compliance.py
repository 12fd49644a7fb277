"""`eventops audit ...` and `eventops compliance ...`: the audit trail and compliance checks."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from workers.cli_output import checked_config, config_errors_exit_2, print_json


def _me() -> str:
    return os.environ.get("USER", "cli")


@click.group()
def audit() -> None:
    """The hash-chained audit log of everything eventops and its operators did."""


@audit.command("verify")
@click.option("--anchor/--no-anchor", default=False, help="Anchor the head if it verifies.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def audit_verify(anchor: bool, as_json: bool) -> None:
    """Walk the chain and hold it to its anchors; exit 1 if it was tampered with."""
    from core.audit import anchor as write_anchor
    from core.audit import verify_and_alert
    from models.db import session_scope
    from workers.settings import get_settings

    var_dir = get_settings().var_dir
    with session_scope() as session:
        report = verify_and_alert(session, checked_config(), var_dir)
    if report.ok and anchor:
        with session_scope() as session:
            write_anchor(session, var_dir)
    if as_json:
        print_json(report.summary())
    elif report.ok:
        click.echo(
            f"audit chain OK: {report.rows} rows, head #{report.last_id}, "
            f"{report.anchors_checked} anchors checked"
        )
    else:
        click.echo(
            f"audit chain BROKEN: first bad row {report.first_bad_id} ({report.tampering}): "
            f"{report.problem}"
        )
    if not report.ok:
        sys.exit(1)


@audit.command("accept")
@click.option("--reason", required=True, help="What was found and why it is accepted.")
@click.option("--by", default=_me, help="Who accepts it.")
@config_errors_exit_2
def audit_accept(reason: str, by: str) -> None:
    """Accept the chain's current break after investigating it: seal the rows so far (later
    changes to them are still found), audit the acceptance, verify again from there."""
    from core.audit import NothingToSeal, seal, verify_and_alert
    from models.db import session_scope
    from workers.settings import get_settings

    var_dir = get_settings().var_dir
    try:
        with session_scope() as session:
            sealed = seal(session, by, reason, var_dir)
    except (NothingToSeal, ValueError) as error:
        raise click.ClickException(str(error)) from None
    with session_scope() as session:
        report = verify_and_alert(session, checked_config(), var_dir)
    click.echo(
        f"sealed rows up to #{sealed.through_id}; the chain "
        + ("verifies again" if report.ok else f"is still broken: {report.problem}")
    )


@audit.command("log")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--action", default=None, help="Only these actions; * is a wildcard.")
@click.option("--actor", default=None, help="Only this actor.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def audit_log(limit: int, action: str | None, actor: str | None, as_json: bool) -> None:
    """The newest audit rows first."""
    from core.audit import entries
    from models.db import session_scope

    with session_scope() as session:
        rows = entries(session, limit=limit, action=action, actor=actor)
        data: list[dict[str, Any]] = [
            {
                "id": r.id,
                "at": r.at.isoformat(),
                "actor": r.actor,
                "action": r.action,
                "subject": r.subject,
                "details": r.details,
            }
            for r in rows
        ]
    if as_json:
        print_json(data)
        return
    for row in data:
        click.echo(
            f"#{row['id']:<6} {row['at'][:19]}  {row['actor']:<16} {row['action']:<24} "
            f"{row['subject'] or ''}"
        )


@click.group()
def compliance() -> None:
    """Access logging, privacy, breach clocks, vulnerability scans and monthly reports."""


def _platform() -> Any:
    from core.backups.tools import Conn
    from workers.settings import get_settings

    url = get_settings().platform_database_url
    if url is None:
        raise click.ClickException("EVENTOPS_PLATFORM_DATABASE_URL is not set")
    return Conn.from_url(url.get_secret_value())


@compliance.command("privacy")
@config_errors_exit_2
def compliance_privacy() -> None:
    """Run access-logging, retention and data-subject-request checks now."""
    from core.clock import utcnow
    from core.compliance.privacy import run_privacy_checks
    from models.db import session_scope

    with session_scope() as session:
        print_json(run_privacy_checks(session, checked_config(), _platform(), utcnow()))


@compliance.command("scan")
@click.option(
    "--advisories",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Override compliance.vulnerabilities.advisories for this run.",
)
@config_errors_exit_2
def compliance_scan(advisories: Path | None) -> None:
    """Run the dependency vulnerability scan now."""
    from core.clock import utcnow
    from core.compliance.vulnerabilities import run_scan
    from models.db import session_scope

    config = checked_config()
    if advisories is not None:
        section = config.compliance.model_copy(
            update={
                "vulnerabilities": config.compliance.vulnerabilities.model_copy(
                    update={"advisories": advisories}
                )
            }
        )
        config = config.model_copy(update={"compliance": section})
    with session_scope() as session:
        print_json(run_scan(session, config, utcnow()))


@compliance.command("findings")
@click.option("--check", default=None, help="access-logging, retention, dsr or vulnerability.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def compliance_findings(check: str | None, as_json: bool) -> None:
    """Open compliance findings, worst first."""
    from core.compliance.findings import open_findings
    from models.db import session_scope

    with session_scope() as session:
        rows = [
            {
                "check": f.check,
                "severity": f.severity,
                "title": f.title,
                "since": f.first_seen.isoformat(),
                "evidence": f.evidence,
            }
            for f in open_findings(session, check)
        ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no open findings")
    for row in rows:
        click.echo(f"{row['severity']:<8} {row['check']:<15} {row['title']}")


@compliance.command("requests")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def compliance_requests(as_json: bool) -> None:
    """Open data subject requests on the platform with their statutory deadlines."""
    from zoneinfo import ZoneInfo

    from core.clock import utcnow
    from core.compliance.privacy import open_requests, read_only

    config = checked_config().compliance
    now = utcnow()
    with read_only(_platform()) as db:
        requests = open_requests(db, config.data_subject_requests, ZoneInfo(config.timezone))
    rows: list[dict[str, Any]] = [
        {
            "id": str(r.id),
            "kind": r.kind,
            "received_at": r.received_at.isoformat(),
            "deadline": r.deadline.isoformat(),
            "regime": r.governing,
            "overdue": now > r.deadline,
        }
        for r in requests
    ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no open data subject requests")
    for row in rows:
        flag = "OVERDUE" if row["overdue"] else "open"
        click.echo(
            f"{row['id']:>6} {row['kind']:<11} received {row['received_at'][:10]}  due "
            f"{row['deadline'][:16]} ({row['regime']})  {flag}"
        )


@compliance.command("report")
@click.option("--month", default=None, help="YYYY-MM (default: the month that just ended).")
@config_errors_exit_2
def compliance_report(month: str | None) -> None:
    """Write the monthly security audit report (Markdown and HTML) and print where."""
    from core.clock import utcnow
    from core.compliance.report import month_bounds, previous_month, write_report
    from models.db import session_scope
    from tasks.compliance import reports_dir

    now = utcnow()
    month = month or previous_month(now)
    try:
        month_bounds(month)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--month") from None
    with session_scope() as session:
        markdown, page = write_report(session, reports_dir(), month, now, by=_me())
    click.echo(f"{markdown}\n{page}")


@compliance.command("reports")
@config_errors_exit_2
def compliance_reports() -> None:
    """The security audit reports written so far, newest first."""
    from core.compliance.report import list_reports
    from tasks.compliance import reports_dir

    found = list_reports(reports_dir())
    if not found:
        click.echo(f"no reports in {reports_dir()}")
    for path in found:
        stamp = datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{path.stem.removeprefix('security-audit-')}  {stamp}  {path}")


@compliance.group("breach")
def breach() -> None:
    """Data breach notification clocks."""


@breach.command("list")
@config_errors_exit_2
def breach_list() -> None:
    """Every breach clock, running ones first."""
    from sqlalchemy import select

    from models.compliance import BreachClock
    from models.db import session_scope

    with session_scope() as session:
        clocks = session.scalars(
            select(BreachClock).order_by(BreachClock.stopped_at.desc().nulls_first())
        ).all()
        for c in clocks:
            state = c.outcome or ("OVERDUE" if c.overdue_at else "running")
            click.echo(
                f"incident #{c.incident_id:<6} started {c.started_at:%Y-%m-%d %H:%M} deadline "
                f"{c.deadline_at:%Y-%m-%d %H:%M} UTC  {state}"
            )
        if not clocks:
            click.echo("no breach clocks")


def _stop(incident_id: int, outcome: str, note: str, by: str) -> None:
    from core.compliance.breach import ClockNotFound, stop_clock
    from models.db import session_scope

    try:
        with session_scope() as session:
            stop_clock(session, checked_config(), incident_id, by=by, outcome=outcome, note=note)
    except (ClockNotFound, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"breach clock of incident #{incident_id} stopped: {outcome}")


@breach.command("notified")
@click.argument("incident_id", type=int)
@click.option("--note", default="", help="The regulator's reference, who was told, how.")
@click.option("--by", default=_me, help="Who notified.")
@config_errors_exit_2
def breach_notified(incident_id: int, note: str, by: str) -> None:
    """Record that the regulator was notified of breach INCIDENT_ID; stops its clock."""
    _stop(incident_id, "notified", note, by)


@breach.command("not-notifiable")
@click.argument("incident_id", type=int)
@click.option("--reason", required=True, help="Why the breach need not be notified.")
@click.option("--by", default=_me, help="Who decided.")
@config_errors_exit_2
def breach_not_notifiable(incident_id: int, reason: str, by: str) -> None:
    """Record that breach INCIDENT_ID is not notifiable (with the reason); stops its clock."""
    _stop(incident_id, "not-notifiable", reason, by)
