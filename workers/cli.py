"""The `eventops` command: run the system, its processes, and look at what it knows."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from models.config import load_config
from workers.cli_output import (
    EXIT_TIMEOUT,
    EventopsGroup,
    NotFound,
    checked_config,
    config_errors_exit_2,
    database_refusal_exits_1,
    fail,
    print_json,
    print_table,
    waiting,
)

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session

    from models.tables import Check, Outcome


def _quiet_for_json_logs(argv: list[str]) -> list[str]:
    """Celery's start-up banner is not JSON: leave it out when the logs are."""
    from workers.logging_setup import json_logs

    return ["--quiet", *argv] if json_logs() else argv


@click.group(cls=EventopsGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """eventops: monitoring and maintenance workers for the Event Pros NZ platform."""
    if ctx.invoked_subcommand != "run":
        from workers.settings import ROOT
        from workers.standalone import load_standalone_env

        load_standalone_env(Path(os.environ.get("EVENTOPS_VAR_DIR", ROOT / "var")))
    # Before anything logs or warns; workers and beat set it again, with their --loglevel,
    # through Celery's setup_logging signal.
    from workers.logging_setup import configure_logging, settings_log_level

    configure_logging(level=settings_log_level())
    if ctx.invoked_subcommand not in ("worker", "beat", "flower", "run"):
        # Those processes start Sentry from their own signals; a bad DSN never stops a command.
        from workers.observability import init_sentry_from_environment

        init_sentry_from_environment("cli")


@main.command()
@config_errors_exit_2
def run() -> None:
    """Start everything: embedded Postgres and Redis unless URLs are given, migrations, the
    worker, beat, Flower and the demo platform. Ctrl-C stops all of it."""
    from workers.settings import get_settings
    from workers.standalone import Standalone

    checked_config()
    sys.exit(Standalone(get_settings()).run())


@main.command()
@config_errors_exit_2
def migrate() -> None:
    """Bring the database schema up to date and load the config's checks into it."""
    from core.migrate import upgrade
    from core.schedule import sync_checks
    from models.db import get_engine, session_scope

    config = checked_config()
    with database_refusal_exits_1("the schema migration failed; the schema is as it was"):
        upgrade(get_engine().url.render_as_string(hide_password=False))
    with (
        database_refusal_exits_1("the checks could not be written; every check is as it was"),
        session_scope() as session,
    ):
        counts = sync_checks(session, config)
    click.echo(
        f"schema up to date; {counts['checks']} checks loaded, {counts['disabled']} disabled"
    )


@main.command()
@click.option("--queues", "-Q", default="probes,pipeline,escalations,slow", show_default=True)
@click.option("--concurrency", "-c", type=int, default=2, show_default=True)
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--hostname", "-n", default=None, help="Node name, e.g. probes@%h.")
@config_errors_exit_2
def worker(queues: str, concurrency: int, loglevel: str, hostname: str | None) -> None:
    """Run a Celery worker (prefork) on the given queues."""
    checked_config()
    from workers.app import app

    argv = ["worker", "-Q", queues, "-c", str(concurrency), "-l", loglevel, "-E"]
    if hostname:
        argv += ["-n", hostname]
    app.worker_main(_quiet_for_json_logs(argv))


@main.command()
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@config_errors_exit_2
def beat(loglevel: str) -> None:
    """Run Celery beat. Run exactly one: the ticks are cheap and idempotent, but pointless twice."""
    from workers.app import app
    from workers.settings import get_settings

    checked_config()
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.var_dir / "celerybeat-schedule"
    app.start(_quiet_for_json_logs(["beat", "-l", loglevel, "-s", str(schedule)]))


@main.command()
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
@config_errors_exit_2
def flower(port: int, address: str) -> None:
    """Run Flower with basic auth (EVENTOPS_FLOWER_USER / EVENTOPS_FLOWER_PASSWORD) on every
    route, /metrics included, and a limit on wrong passwords per address."""
    from workers.flower_server import serve

    serve(port, address)


@main.command("wal-archive")
@config_errors_exit_2
def wal_archive() -> None:
    """Stream the platform database's WAL into the backups directory (pg_receivewal), for
    point-in-time recovery. Runs until stopped; run one."""
    import signal
    import time

    from core.backups.pitr import WalReceiver

    _, conn, directory, _ = _backup_setup()
    (directory / "wal").mkdir(parents=True, exist_ok=True)
    receiver = WalReceiver(conn, directory / "wal")
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    receiver.start()
    click.echo(f"archiving WAL into {directory / 'wal'}")
    try:
        while not stopping:
            if not receiver.is_running():
                raise click.ClickException("pg_receivewal stopped; see its output above")
            time.sleep(1)
    finally:
        receiver.stop()


@main.group()
def config() -> None:
    """Look at the configuration."""


@config.command("check")
@click.argument("path", type=click.Path(path_type=Path), required=False)
@config_errors_exit_2
def config_check(path: Path | None) -> None:
    """Validate the config file (default: EVENTOPS_CONFIG_FILE); exit 2 on problems."""
    from workers.settings import read_settings

    settings = read_settings()
    loaded = load_config(path or settings.config_file, settings.config_overrides())
    click.echo(
        f"ok: {len(loaded.checks)} checks, {len(loaded.channels)} channels, "
        f"platform {loaded.platform_url}"
    )


@main.group()
def checks() -> None:
    """List checks and run them now."""


@checks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def checks_list(as_json: bool) -> None:
    """Every check with its state."""
    from sqlalchemy import select

    from models.db import session_scope
    from models.tables import Check

    with session_scope() as session:
        rows = session.scalars(select(Check).order_by(Check.name)).all()
        data = [
            {
                "name": c.name,
                "status": c.status if c.enabled else "disabled",
                "interval_s": c.interval_s,
                "failures": c.consecutive_failures,
                "last_checked_at": c.last_checked_at.isoformat() if c.last_checked_at else None,
                "last_latency_ms": c.last_latency_ms,
                "last_reason": c.last_reason,
                "next_due_at": c.next_due_at.isoformat(),
            }
            for c in rows
        ]
    if as_json:
        print_json(data)
        return
    print_table(
        ["check", "status", "every", "latency", "failures", "checked", "last reason"],
        [
            [
                row["name"],
                row["status"],
                f"{row['interval_s']:.0f}s",
                f"{row['last_latency_ms']:.0f} ms" if row["last_latency_ms"] is not None else "-",
                row["failures"],
                str(row["last_checked_at"] or "-")[:19].replace("T", " "),
                row["last_reason"] or "",
            ]
            for row in data
        ],
        right=["every", "latency", "failures"],
    )


@checks.command("run")
@click.argument("name")
@click.option(
    "--wait",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Wait this long for the probe's outcome and print it; exit 1 if it failed, 4 if none.",
)
def checks_run(name: str, wait: float | None) -> None:
    """Make a check due now; the next dispatch tick (within seconds) probes it."""
    import time

    from core.clock import utcnow
    from core.schedule import request_probe_now
    from models.db import session_scope

    asked_at = utcnow()
    with session_scope() as session:
        found = request_probe_now(session, name, now=asked_at)
    if not found:
        raise NotFound(f"no check named {name!r}")
    if wait is None:
        click.echo(f"{name}: due now")
        return
    deadline = time.monotonic() + wait
    with waiting(f"{name}: due now, waiting up to {wait:g} s for beat and a worker to probe it"):
        while True:
            with session_scope() as session:
                outcome = probed_since(session, name, asked_at)
            if outcome is not None:
                break
            if time.monotonic() >= deadline:
                fail(
                    f"{name}: no outcome within {wait:g} s; are beat and a worker running?",
                    EXIT_TIMEOUT,
                )
            time.sleep(0.5)
    probe, check = outcome
    # The probe's own answer is what was asked for; the check's state needs alert_threshold
    # failures (or recovery_threshold passes) in a row to change, so it may still differ.
    latency = f", {probe.latency_ms:.0f} ms" if probe.latency_ms is not None else ""
    reason = f": {probe.reason}" if probe.reason else ""
    state = "" if check.status == probe.status else f" (the check is still {check.status})"
    click.echo(f"{name}: {probe.status}{latency}{reason}{state}")
    if probe.status != "up":
        sys.exit(1)


def probed_since(session: Session, name: str, asked_at: datetime) -> tuple[Outcome, Check] | None:
    """The outcome of the slot `checks run` made due (its slot is the moment it asked, or a
    later one), with the check as it stands after it; None until one is written."""
    from sqlalchemy import select

    from models.tables import Check, Outcome

    row = session.execute(
        select(Outcome, Check)
        .join(Check, Check.id == Outcome.check_id)
        .where(Check.name == name, Outcome.slot >= asked_at)
        .order_by(Outcome.slot)
        .limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


@main.group()
def incidents() -> None:
    """List, acknowledge and resolve incidents."""


@incidents.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include resolved incidents.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def incidents_list(show_all: bool, as_json: bool) -> None:
    """Open incidents, newest first."""
    from sqlalchemy import select

    from models.db import session_scope
    from models.tables import Incident

    with session_scope() as session:
        query = select(Incident).order_by(Incident.opened_at.desc()).limit(200)
        if not show_all:
            query = query.where(Incident.status != "resolved")
        data = [
            {
                "id": i.id,
                "severity": i.severity,
                "status": i.status,
                "title": i.title,
                "opened_at": i.opened_at.isoformat(),
                "notified_at": i.notified_at.isoformat() if i.notified_at else None,
                "resolved_at": i.resolved_at.isoformat() if i.resolved_at else None,
            }
            for i in session.scalars(query)
        ]
    if as_json:
        print_json(data)
        return
    if not data:
        click.echo("no open incidents" if not show_all else "no incidents")
        return
    print_table(
        ["id", "severity", "status", "title", "since", "notified"],
        [
            [
                f"#{row['id']}",
                row["severity"],
                row["status"],
                row["title"],
                str(row["opened_at"])[:19].replace("T", " "),
                "yes" if row["notified_at"] else "not yet",
            ]
            for row in data
        ],
        right=["id"],
    )


@incidents.command("show")
@click.argument("incident_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def incidents_show(incident_id: int, as_json: bool) -> None:
    """One incident with its timeline: every transition, note and notification."""
    from sqlalchemy import select

    from models.db import session_scope
    from models.tables import Incident, IncidentEvent

    with session_scope() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise NotFound(f"no incident #{incident_id}")
        events = session.scalars(
            select(IncidentEvent)
            .where(IncidentEvent.incident_id == incident_id)
            .order_by(IncidentEvent.at, IncidentEvent.id)
        ).all()
        data: dict[str, Any] = {
            "id": incident.id,
            "title": incident.title,
            "severity": incident.severity,
            "status": incident.status,
            "category": incident.category,
            "labels": incident.labels,
            "summary": incident.summary,
            "impact": incident.impact,
            "opened_at": incident.opened_at.isoformat(),
            "acknowledged_by": incident.acknowledged_by,
            "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
            "timeline": [
                {"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "detail": e.detail}
                for e in events
            ],
        }
    if as_json:
        print_json(data)
        return
    click.echo(f"#{data['id']} {data['title']}")
    click.echo(
        f"  {data['severity']}, {data['status']}, {data['category']}; "
        f"opened {data['opened_at'][:19].replace('T', ' ')} UTC"
    )
    for label in ("summary", "impact", "acknowledged_by"):
        if data[label]:
            click.echo(f"  {label.replace('_', ' ')}: {data[label]}")
    print_table(
        ["at (UTC)", "event", "by", "detail"],
        [
            [e["at"][:19].replace("T", " "), e["kind"], e["actor"], e["detail"] or ""]
            for e in data["timeline"]
        ],
        title="timeline",
    )


def _change_incident(action: str, incident_id: int, by: str) -> None:
    from core import incidents as lifecycle

    try:
        if action == "acknowledge":
            changed = lifecycle.acknowledge(incident_id, by=by)
        elif action == "resolve":
            changed = lifecycle.resolve(incident_id, by, checked_config())
        else:
            changed = lifecycle.reopen(incident_id, by, checked_config())
    except lifecycle.IncidentNotFound as error:
        raise NotFound(str(error)) from None
    verb = {"acknowledge": "acknowledged", "resolve": "resolved", "reopen": "reopened"}[action]
    unchanged = {
        "acknowledge": "was not open",
        "resolve": "was already resolved",
        "reopen": "is not resolved",
    }[action]
    click.echo(f"#{incident_id} {verb}" if changed else f"#{incident_id} {unchanged}; unchanged")


@incidents.command("ack")
@click.argument("incident_id", type=int)
@click.option("--by", default=lambda: os.environ.get("USER", "cli"), help="Who acknowledges.")
def incidents_ack(incident_id: int, by: str) -> None:
    """Acknowledge an incident: its pending escalations stop."""
    _change_incident("acknowledge", incident_id, by)


@incidents.command("resolve")
@click.argument("incident_id", type=int)
@click.option("--by", default=lambda: os.environ.get("USER", "cli"), help="Who resolves.")
def incidents_resolve(incident_id: int, by: str) -> None:
    """Resolve an incident by hand."""
    _change_incident("resolve", incident_id, by)


@incidents.command("reopen")
@click.argument("incident_id", type=int)
@click.option("--by", default=lambda: os.environ.get("USER", "cli"), help="Who reopens.")
def incidents_reopen(incident_id: int, by: str) -> None:
    """Reopen a resolved incident that was not fixed after all."""
    _change_incident("reopen", incident_id, by)


@incidents.command("note")
@click.argument("incident_id", type=int)
@click.argument("text")
@click.option("--by", default=lambda: os.environ.get("USER", "cli"), help="Who writes.")
@click.option("--public", is_flag=True, help="A status update for the stakeholders.")
def incidents_note(incident_id: int, text: str, by: str, public: bool) -> None:
    """Add a note to the timeline (--public: also a status update to stakeholders)."""
    from core import incidents as lifecycle

    try:
        lifecycle.note(incident_id, text, by, checked_config(), public=public)
    except lifecycle.IncidentNotFound as error:
        raise NotFound(str(error)) from None
    click.echo(f"#{incident_id}: noted")


@incidents.command("postmortem")
@click.argument("incident_id", type=int)
def incidents_postmortem(incident_id: int) -> None:
    """Print the incident's post-mortem draft (Markdown), drafting it now if needed."""
    from core.incidents import IncidentNotFound
    from core.postmortem import draft_postmortem
    from models.db import session_scope
    from models.tables import Incident

    try:
        with session_scope() as session:
            incident = session.get(Incident, incident_id)
            stored = incident.postmortem if incident is not None else None
            click.echo(stored or draft_postmortem(session, incident_id))
    except IncidentNotFound as error:
        raise NotFound(str(error)) from None


@main.group()
def silences() -> None:
    """Mute pages for matching incidents for a while (incidents still open and resolve)."""


@silences.command("add")
@click.argument("matchers", nargs=-1, required=True)
@click.option("--for", "duration", default="1h", show_default=True, help="How long: 30m, 2h.")
@click.option("--comment", default="", help="Why; shown on the incidents it holds.")
@click.option("--by", default=lambda: os.environ.get("USER", "cli"), help="Who silences.")
def silences_add(matchers: tuple[str, ...], duration: str, comment: str, by: str) -> None:
    """Silence incidents matching every MATCHER: check=stripe, group=~pay.*, severity!=info."""
    from core.silences import create_silence
    from models.config import parse_duration
    from models.db import session_scope

    try:
        length = parse_duration(duration)
        with session_scope() as session:
            silence = create_silence(
                session, list(matchers), by=by, comment=comment, duration=length
            )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    click.echo(f"silence #{silence.id} until {silence.ends_at:%Y-%m-%d %H:%M} UTC")


@silences.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def silences_list(as_json: bool) -> None:
    """Active and upcoming silences."""
    from sqlalchemy import select

    from core.clock import utcnow
    from models.db import session_scope
    from models.tables import Silence

    with session_scope() as session:
        rows = session.scalars(
            select(Silence).where(Silence.ends_at > utcnow()).order_by(Silence.ends_at)
        ).all()
        data: list[dict[str, Any]] = [
            {
                "id": s.id,
                "matchers": s.matchers,
                "starts_at": s.starts_at.isoformat(),
                "ends_at": s.ends_at.isoformat(),
                "created_by": s.created_by,
                "comment": s.comment,
            }
            for s in rows
        ]
    if as_json:
        print_json(data)
        return
    if not data:
        click.echo("no active silences")
        return
    print_table(
        ["id", "matchers", "from", "until", "by", "comment"],
        [
            [
                f"#{row['id']}",
                " ".join(row["matchers"]),
                str(row["starts_at"])[:16].replace("T", " "),
                str(row["ends_at"])[:16].replace("T", " "),
                row["created_by"],
                row["comment"],
            ]
            for row in data
        ],
        right=["id"],
    )


@silences.command("expire")
@click.argument("silence_id", type=int)
@click.option("--by", default=lambda: os.environ.get("USER", "cli"), help="Who ends it.")
def silences_expire(silence_id: int, by: str) -> None:
    """End a silence now; held pages go out on the next sweep if their incidents are open."""
    from core.silences import expire_silence
    from models.db import session_scope

    with session_scope() as session:
        ended = expire_silence(session, silence_id, by=by)
    if not ended:
        raise NotFound(f"no active silence #{silence_id}")
    click.echo(f"silence #{silence_id} ended")


@main.group()
def backups() -> None:
    """List, run, verify, restore-test and restore backups of the platform database."""


def _backup_setup() -> tuple[Any, Any, Path, str | None]:
    from tasks.backups import BackupsNotConfigured, _setup

    try:
        return _setup()
    except BackupsNotConfigured as error:
        raise click.ClickException(str(error)) from None


def _report(result: dict[str, Any], as_json: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for key, value in result.items():
        click.echo(f"{key}: {value}")
    # Exit 1 when the operation ran and found a problem, so scripts and cron notice.
    bad = (
        result.get("failed")
        or result.get("state") == "failed"
        or result.get("verify_state") == "corrupt"
        or result.get("corrupt_ids")
    )
    if bad:
        sys.exit(1)


@backups.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include deleted backups.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backups_list(show_all: bool, as_json: bool) -> None:
    """Backups, newest first, with their state and verification."""
    from sqlalchemy import select

    from models.db import session_scope
    from models.tables import Backup

    with session_scope() as session:
        query = select(Backup).order_by(Backup.started_at.desc()).limit(200)
        if not show_all:
            query = query.where(Backup.deleted_at.is_(None))
        data: list[dict[str, Any]] = [
            {
                "id": b.id,
                "kind": b.kind,
                "state": b.state,
                "verify_state": b.verify_state,
                "snapshot_at": b.snapshot_at.isoformat() if b.snapshot_at else None,
                "size_bytes": b.size_bytes,
                "duration_s": b.duration_s,
                "encrypted": b.encrypted,
                "path": b.path,
                "deleted": b.deleted_at is not None,
                "error": b.error or b.verify_error,
            }
            for b in session.scalars(query)
        ]
    if as_json:
        print_json(data)
        return
    if not data:
        click.echo("no backups yet")
        return
    print_table(
        ["id", "kind", "state", "verified", "snapshot (UTC)", "size", "took", "error"],
        [
            [
                f"#{row['id']}",
                row["kind"],
                row["state"],
                row["verify_state"],
                str(row["snapshot_at"] or "-")[:19].replace("T", " "),
                f"{row['size_bytes'] / 1e6:.1f} MB" if row["size_bytes"] else "-",
                f"{row['duration_s']:.1f} s" if row["duration_s"] is not None else "-",
                row["error"] or "",
            ]
            for row in data
        ],
        right=["id", "size", "took"],
    )


@backups.command("run")
@click.option("--kind", type=click.Choice(["hourly", "daily"]), default="hourly", show_default=True)
def backups_run(kind: str) -> None:
    """Take this hour's (or today's) logical backup now, if it was not taken yet."""
    from core.backups.logical import run_logical_backup
    from core.clock import utcnow
    from models.db import session_scope
    from tasks.backups import slot_for

    config, conn, directory, key = _backup_setup()
    slot = slot_for("day" if kind == "daily" else "hour", utcnow())
    with waiting(f"taking the {kind} backup (pg_dump, checksum, encryption)"):
        result = run_logical_backup(session_scope, conn, config, directory, kind, slot, key)
    _report(result)


@backups.command("verify")
@click.argument("backup_id", type=int, required=False)
def backups_verify(backup_id: int | None) -> None:
    """Verify one backup (checksum and a full read), or every unverified one."""
    from core.backups.logical import verify_backup, verify_due_backups
    from models.db import session_scope

    _, _, _, key = _backup_setup()
    if backup_id is None:
        _report(verify_due_backups(session_scope, key))
    else:
        _report(verify_backup(session_scope, backup_id, key))


@backups.command("restore-test")
@click.argument("backup_id", type=int, required=False)
def backups_restore_test(backup_id: int | None) -> None:
    """Restore a backup (default: the newest verified) into a scratch database, compare row
    counts and checksums with the dump, measure RTO and RPO, drop the scratch copy."""
    from core.backups.logical import restore_test
    from core.clock import utcnow
    from models.db import session_scope

    config, conn, _, key = _backup_setup()
    _report(restore_test(session_scope, conn, backup_id, utcnow(), key, config=config))


@backups.command("restore")
@click.argument("backup_id", type=int)
@click.option("--target-db", required=True, help="Database to restore into (on the same server).")
@click.option("--replace", is_flag=True, help="Drop and recreate the target if it exists.")
@click.option(
    "--overwrite-source",
    is_flag=True,
    help="Allow the target to be the platform database itself. Only in an emergency.",
)
def backups_restore(backup_id: int, target_db: str, replace: bool, overwrite_source: bool) -> None:
    """Restore a logical backup into a named database; never over the source without
    --overwrite-source."""
    from core.backups.restore import RestoreRefused, restore_into_database
    from models.db import session_scope

    _, conn, _, key = _backup_setup()
    try:
        with session_scope() as session:
            result = restore_into_database(
                session,
                conn,
                backup_id,
                target_db,
                key,
                overwrite_source=overwrite_source,
                replace_existing=replace,
            )
    except RestoreRefused as error:
        raise click.ClickException(str(error)) from None
    _report(result)


@backups.command("pitr")
@click.option("--to", "target", required=True, help="Target time, ISO 8601 with offset.")
@click.option(
    "--target-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Empty directory for the restored data (never the live one).",
)
@click.option(
    "--base",
    "base_id",
    type=int,
    default=None,
    help="Base backup id (default: the newest taken before the target time).",
)
def backups_pitr(target: str, target_dir: Path, base_id: int | None) -> None:
    """Point-in-time restore: a base backup plus archived WAL replayed up to --to."""
    from datetime import datetime

    from core.backups.pitr import point_in_time_restore
    from core.clock import utcnow
    from models.db import session_scope

    try:
        target_time = datetime.fromisoformat(target)
    except ValueError:
        raise click.BadParameter(f"{target!r} is not an ISO 8601 time") from None
    if target_time.tzinfo is None:
        raise click.BadParameter("give the time zone, e.g. 2026-11-27T09:41:00+13:00")
    _, _, directory, _ = _backup_setup()
    _report(
        point_in_time_restore(
            session_scope, base_id, directory / "wal", target_time, target_dir, utcnow()
        )
    )


@backups.command("drill")
def backups_drill() -> None:
    """Run the disaster recovery drill now: restore into a fresh instance, time to healthy."""
    from core.backups.drill import run_drill
    from core.clock import utcnow
    from models.db import session_scope

    config, _, directory, key = _backup_setup()
    _report(
        run_drill(
            session_scope,
            None,
            directory / "drills",
            utcnow(),
            key,
            rto_objective=config.rto,
            rpo_objective=config.rpo,
        )
    )


@main.command()
@config_errors_exit_2
def shell() -> None:
    """A Python prompt (IPython if installed) with the app, tasks, models, a session and a
    small API: probe_now("stripe"), incidents.open(), run_backup(); prints a cheat sheet."""
    from workers.shell import start_shell

    start_shell()


@main.group()
def tasks() -> None:
    """List eventops' Celery tasks and trigger any of them by name."""


@tasks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def tasks_list(as_json: bool) -> None:
    """Every registered eventops task with the queue it is routed to."""
    from workers.shell import registered_tasks

    routes = registered_tasks()
    if as_json:
        print_json([{"name": n, "queue": q} for n, q in routes.items()])
        return
    print_table(["task", "queue"], list(routes.items()))


def _json_option(value: str | None, option: str, kind: type) -> Any:
    if value is None:
        return kind()
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not valid JSON ({error})", param_hint=option) from None
    if not isinstance(parsed, kind):
        example = "'[\"daily\"]'" if kind is list else '\'{"kind": "daily"}\''
        shape = "array" if kind is list else "object"
        raise click.BadParameter(
            f"must be a JSON {shape}, e.g. {option} {example}", param_hint=option
        )
    return parsed


@tasks.command("run")
@click.argument("name")
@click.option("--args", "args_json", default=None, help="Positional arguments, a JSON array.")
@click.option("--kwargs", "kwargs_json", default=None, help="Keyword arguments, a JSON object.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Wait this long for the result and print it as JSON; exit 1 on failure or timeout.",
)
@config_errors_exit_2
def tasks_run(
    name: str, args_json: str | None, kwargs_json: str | None, wait: float | None
) -> None:
    """Send task NAME (e.g. escalations.sweep) to its queue, optionally waiting for its result."""
    from kombu.exceptions import OperationalError

    from workers.shell import UnknownTask, send

    args = _json_option(args_json, "--args", list)
    kwargs = _json_option(kwargs_json, "--kwargs", dict)
    try:
        sent = send(name, args, kwargs, keep_result=wait is not None)
    except UnknownTask as error:
        raise click.BadParameter(str(error), param_hint="NAME") from None
    except OperationalError as error:
        raise click.ClickException(f"cannot reach the broker: {error}") from None
    if wait is None:
        click.echo(f"sent {name} to queue {sent.queue} (task id {sent.id})")
        return
    try:
        with waiting(f"waiting up to {wait:g} s for {name} (task id {sent.id})"):
            result = sent.get(wait)
    except TimeoutError as error:
        fail(str(error), EXIT_TIMEOUT)
    except Exception as error:  # the task's own exception, re-raised by the result backend
        fail(f"{name} failed: {type(error).__name__}: {error}")
    click.echo(json.dumps(result, indent=2, default=str))


from workers.cli_dashboard import dashboard  # noqa: E402

main.add_command(dashboard)


from workers.cli_insight import insight  # noqa: E402

main.add_command(insight)


from workers.cli_compliance import audit, compliance  # noqa: E402

main.add_command(audit)
main.add_command(compliance)


from workers.cli_maintenance import maintenance  # noqa: E402

main.add_command(maintenance)


from workers.cli_security import security  # noqa: E402

main.add_command(security)


from workers.cli_reports import logs, reports  # noqa: E402

main.add_command(reports)
main.add_command(logs)


from workers.cli_outcomes import outcomes  # noqa: E402

main.add_command(outcomes)


if __name__ == "__main__":
    main()
