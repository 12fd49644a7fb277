"""`eventops maintenance`: self-monitoring status, infrastructure figures and the database
maintenance reports, run now from the command line."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from workers.cli_output import checked_config, config_errors_exit_2

REPORT_KINDS = ("indexes", "queries", "vacuum")


@click.group()
def maintenance() -> None:
    """Self-monitoring, infrastructure metrics and database maintenance reports."""


@maintenance.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def status(as_json: bool) -> None:
    """Every self-monitoring check (beat, sweeper, workers, queues, outbox) with the workers
    and queues; exits 1 when a check fails, so scripts and probes can use it."""
    import redis
    from sqlalchemy import select

    from core.clock import utcnow
    from core.maintenance import selfmon
    from core.maintenance.redis_metrics import QueueFigures, queue_figures
    from core.maintenance.summary import workers_and_queues
    from models.db import session_scope
    from models.maintenance import SelfmonMark
    from tasks.maintenance import broker
    from workers.app import QUEUES

    config = checked_config().maintenance
    now = utcnow()
    queues: list[QueueFigures] | None
    try:
        queues = queue_figures(broker(), QUEUES, now)
    except redis.RedisError as error:
        queues = None
        click.echo(f"broker unreachable: {type(error).__name__}", err=True)
    with session_scope() as session:
        verdicts = selfmon.evaluate(session, config, now, queues)
        summary = workers_and_queues(session, now, config.worker_stale_after, QUEUES)
        marks = {m.source: m.last_seen for m in session.scalars(select(SelfmonMark))}
    failing = [v for v in verdicts if not v.healthy]
    if as_json:
        data: dict[str, Any] = {
            "healthy": not failing,
            "checks": [
                {"check": v.check, "subject": v.subject, "healthy": v.healthy, "detail": v.detail}
                for v in verdicts
            ],
            "marks": marks,
            "workers": summary["workers"],
            "queues": [
                {"name": q.name, "length": q.length, "oldest_age_s": q.oldest_age_s}
                for q in queues or []
            ],
        }
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo("self-monitoring:")
        for v in verdicts:
            click.echo(
                f"  {'ok  ' if v.healthy else 'FAIL'} {v.check:<8} {v.subject:<28} {v.detail}"
            )
        click.echo("marks (last seen):")
        for source, seen in sorted(marks.items()):
            click.echo(f"  {source:<20} {(now - seen).total_seconds():.0f} s ago")
        click.echo("workers:")
        for w in summary["workers"]:
            figures = " ".join(
                f"{k} {w[k]:.0%}" for k in ("cpu", "memory", "disk") if w[k] is not None
            )
            state = "alive" if w["alive"] else "MISSING"
            click.echo(
                f"  {w['name']:<30} {state:<8} last seen {w['last_seen']:%H:%M:%S}  {figures}"
            )
        if not summary["workers"]:
            click.echo("  (none has reported)")
    sys.exit(1 if failing else 0)


@maintenance.command("collect")
@config_errors_exit_2
def collect() -> None:
    """Collect the Postgres and Redis figures once, now, into the metrics table."""
    from tasks.maintenance import collect_postgres_metrics, collect_redis_metrics

    checked_config()
    click.echo(
        json.dumps({"postgres": collect_postgres_metrics(), "redis": collect_redis_metrics()})
    )


def _run(kind: str, target: str | None) -> None:
    from sqlalchemy import select

    from core.clock import utcnow
    from core.maintenance.jobs import run_report
    from models.db import session_scope
    from models.maintenance import MaintenanceReport
    from tasks.maintenance import database_targets

    config = checked_config()
    targets = database_targets()
    if target is not None:
        if target not in targets:
            raise click.BadParameter(
                f"{target!r} is not a configured database with a URL "
                f"(have: {', '.join(targets) or 'none'})",
                param_hint="--target",
            )
        targets = {target: targets[target]}
    summary = run_report(
        kind, targets, session_scope, config.maintenance, config.timezone, utcnow()
    )
    failed = False
    with session_scope() as session:
        for name, result in summary.items():
            if "error" in result:
                # Not always the connection: a missing privilege on a statistics view too.
                click.echo(f"{kind} report for {name}: failed ({result['error']})", err=True)
                failed = True
                continue
            report = session.scalars(
                select(MaintenanceReport)
                .where(MaintenanceReport.kind == kind, MaintenanceReport.target == name)
                .order_by(MaintenanceReport.created_at.desc())
                .limit(1)
            ).one()
            click.echo(report.text)
    if failed:
        sys.exit(1)  # exit codes: 1 = ran and failed (docs/operations.md)


_TARGET = click.option(
    "--target", default=None, help="platform-db or eventops-db (default: every configured one)."
)


@maintenance.command("indexes")
@_TARGET
@config_errors_exit_2
def indexes(target: str | None) -> None:
    """Index report now: unused, duplicate, invalid, bloated indexes, unindexed foreign keys."""
    _run("indexes", target)


@maintenance.command("queries")
@_TARGET
@config_errors_exit_2
def queries(target: str | None) -> None:
    """Query analysis now: top queries and regressions from pg_stat_statements."""
    _run("queries", target)


@maintenance.command("vacuum")
@_TARGET
@config_errors_exit_2
def vacuum(target: str | None) -> None:
    """Vacuum/analyze report now: dead tuples and stale statistics."""
    _run("vacuum", target)


@maintenance.command("forget-worker")
@click.argument("hostname")
def forget_worker(hostname: str) -> None:
    """Remove a decommissioned worker, so it no longer shows (and alerts) as missing."""
    from sqlalchemy import delete

    from models.db import affected, session_scope
    from models.maintenance import WorkerHeartbeat

    with session_scope() as session:
        gone = affected(
            session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.hostname == hostname))
        )
    if not gone:
        raise click.ClickException(f"no worker named {hostname!r} has reported")
    click.echo(f"forgot {hostname}")
