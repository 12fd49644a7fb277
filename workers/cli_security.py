"""`eventops security ...`: bans, findings, sources, running a detector, unbanning, and the
daily security event analysis, from the command line."""

from __future__ import annotations

import os
import sys
from datetime import date, datetime, timedelta

import click

from models.config import parse_duration
from workers.cli_output import checked_config, config_errors_exit_2, print_json


def _me() -> str:
    return os.environ.get("USER", "cli")


@click.group()
def security() -> None:
    """Security event detection: bans, findings, detectors and the daily analysis."""


@security.command("bans")
@click.option("--all", "show_all", is_flag=True, help="Include expired and lifted bans.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def bans(show_all: bool, as_json: bool) -> None:
    """Active bans (what the platform enforces now), newest first."""
    from sqlalchemy import select

    from core.clock import utcnow
    from models.db import session_scope
    from models.security import SecurityBan

    checked_config()
    now = utcnow()
    with session_scope() as session:
        query = select(SecurityBan).order_by(SecurityBan.banned_at.desc())
        if not show_all:
            query = query.where(SecurityBan.lifted_at.is_(None), SecurityBan.until > now)
        rows = [
            {
                "id": b.id,
                "kind": b.kind,
                "value": b.value,
                "jail": b.jail,
                "banned_at": b.banned_at,
                "until": b.until,
                "offence": b.offence_count,
                "lifted_at": b.lifted_at,
                "reason": b.reason,
            }
            for b in session.scalars(query)
        ]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no active bans" if not show_all else "no bans")
    for r in rows:
        lifted = f" lifted {r['lifted_at']:%Y-%m-%d %H:%M}" if r["lifted_at"] else ""
        click.echo(
            f"#{r['id']} {r['kind']} {r['value']} until {r['until']:%Y-%m-%d %H:%M %Z} "
            f"({r['jail']}, offence {r['offence']}){lifted}: {r['reason']}"
        )


@security.command("findings")
@click.option("--since", default="24h", show_default=True, help="How far back (e.g. 2h, 7d).")
@click.option("--detector", default=None, help="Only this detector's findings.")
@click.option("--severity", type=click.Choice(["critical", "warning", "info"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def findings(since: str, detector: str | None, severity: str | None, as_json: bool) -> None:
    """Findings whose window ends within --since, newest first."""
    from sqlalchemy import select

    from core.clock import utcnow
    from models.db import session_scope
    from models.security import SecurityFinding

    try:
        back = parse_duration(since)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since") from None
    checked_config()
    with session_scope() as session:
        query = (
            select(SecurityFinding)
            .where(SecurityFinding.window_end >= utcnow() - back)
            .order_by(SecurityFinding.window_end.desc())
        )
        if detector:
            query = query.where(SecurityFinding.detector == detector)
        if severity:
            query = query.where(SecurityFinding.severity == severity)
        rows = list(session.scalars(query))
        data = [
            {
                "id": f.id,
                "detector": f.detector,
                "kind": f.kind,
                "severity": f.severity,
                "subject": f.subject,
                "window_start": f.window_start,
                "window_end": f.window_end,
                "summary": f.summary,
                "incident_id": f.incident_id,
                "evidence": f.evidence,
            }
            for f in rows
        ]
    if as_json:
        print_json(data)
        return
    if not data:
        click.echo("no findings")
    for f in data:
        incident = f" (incident #{f['incident_id']})" if f["incident_id"] else ""
        click.echo(
            f"#{f['id']} {f['severity']:<8} {f['detector']}/{f['kind']} {f['subject']} "
            f"{f['window_end']:%Y-%m-%d %H:%M}{incident}\n    {f['summary']}"
        )


@security.command("run")
@click.argument("detector")
@click.option(
    "--since",
    default=None,
    help="Judge from this ISO time (default: where the detector stopped last).",
)
@config_errors_exit_2
def run(detector: str, since: str | None) -> None:
    """Run DETECTOR now in this process (failed_logins, api_abuse, data_access, signatures),
    or `all` for a whole tick (sources, detectors, webhooks)."""
    from core.audit import audit_now
    from core.clock import utcnow
    from core.security import runner
    from models.db import session_scope
    from tasks.security import _platform

    config = checked_config()
    now = utcnow()
    known = runner.detectors(config)
    if detector != "all" and detector not in known:
        raise click.BadParameter(
            f"unknown detector {detector!r} (known: all, {', '.join(known)})",
            param_hint="DETECTOR",
        )
    start = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            raise click.BadParameter("must be an ISO time", param_hint="--since") from None
        if start.tzinfo is None:
            raise click.BadParameter("needs a time zone (+00:00)", param_hint="--since")
    audit_now(_me(), "task.run", f"security:{detector}", {"since": since})
    if detector == "all":
        summary = runner.tick(session_scope, config, _platform(), now)
    else:
        with session_scope() as session:
            summary = runner.run_detector(session, config, detector, now, since=start)
    print_json(summary)


@security.command("unban")
@click.argument("value")
@click.option("--kind", type=click.Choice(["ip", "account"]), default="ip", show_default=True)
@config_errors_exit_2
def unban(value: str, kind: str) -> None:
    """Lift the active bans of an IP (or, with --kind account, an account)."""
    from core.audit import audit
    from core.clock import utcnow
    from core.security.runner import unban as lift
    from models.db import session_scope

    config = checked_config()
    with session_scope() as session:
        lifted = lift(session, config, value, kind, _me(), utcnow())
        if lifted:
            audit(session, _me(), "security.unban", f"{kind}:{value}", {"bans": lifted})
    if not lifted:
        click.echo(f"no active ban on {kind} {value}", err=True)
        sys.exit(1)
    click.echo(f"lifted {len(lifted)} ban(s) on {kind} {value}: {', '.join(map(str, lifted))}")


@security.command("report")
@click.option("--day", default=None, help="Local day YYYY-MM-DD (default: yesterday).")
@config_errors_exit_2
def report(day: str | None) -> None:
    """Run the daily security event analysis for a day and print its Markdown."""
    from core.clock import utcnow
    from core.security.daily import daily_analysis, previous_local_day
    from models.db import session_scope

    config = checked_config()
    now = utcnow()
    try:
        which = date.fromisoformat(day) if day else previous_local_day(now, config.timezone)
    except ValueError:
        raise click.BadParameter("must be YYYY-MM-DD", param_hint="--day") from None
    with session_scope() as session:
        markdown, _ = daily_analysis(session, config, which, now)
    click.echo(markdown, nl=False)


@security.command("sources")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def sources(as_json: bool) -> None:
    """Each source's high-water mark, rows rejected and why; each detector's last window."""
    from sqlalchemy import select

    from models.db import session_scope
    from models.security import SecurityDetectorState

    config = checked_config()
    with session_scope() as session:
        rows = {s.name: s for s in session.scalars(select(SecurityDetectorState))}
        data = []
        for source in config.security.sources:
            state = rows.get(f"source:{source.name}")
            data.append(
                {
                    "name": f"source:{source.name}",
                    "from": (source.query and "query") or str(source.file),
                    "cursor": state.cursor if state else None,
                    "updated_at": state.updated_at if state else None,
                    "rejected": (state.details or {}).get("rejected", 0) if state else 0,
                    "recent_errors": (state.details or {}).get("recent_errors", [])[:3]
                    if state
                    else [],
                }
            )
        for name, state in sorted(rows.items()):
            if name.startswith("detector:"):
                data.append({"name": name, "cursor": state.cursor, "updated_at": state.updated_at})
    if as_json:
        print_json(data)
        return
    stale_after = timedelta(minutes=10)
    from core.clock import utcnow

    for d in data:
        age = ""
        if d.get("updated_at"):
            late = utcnow() - d["updated_at"] > stale_after
            age = f" updated {d['updated_at']:%Y-%m-%d %H:%M}" + (" (stale)" if late else "")
        rejected = f", {d['rejected']} rejected" if d.get("rejected") else ""
        click.echo(f"{d['name']}: at {d['cursor']}{age}{rejected}")
        for error in d.get("recent_errors", []):
            click.echo(f"    {error}")
