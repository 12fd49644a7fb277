"""`eventops reports ...` and `eventops logs ...`: the weekly report, capacity forecasts,
log ingestion, error patterns and rotation, run here and now or read from what the
beat-scheduled tasks stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from workers.cli_output import checked_config, config_errors_exit_2


def _reports_root() -> Path:
    from core.reports.registry import reports_dir
    from workers.settings import get_settings

    return reports_dir(get_settings().var_dir, checked_config().reports.directory)


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


# --- reports ---------------------------------------------------------------------------


@click.group()
def reports() -> None:
    """The weekly performance report and capacity forecasts."""


@reports.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per report.")
@config_errors_exit_2
def reports_list(as_json: bool) -> None:
    """Reports written so far, newest first."""
    from core.reports.registry import list_reports

    found = list_reports(_reports_root().parent, _reports_root())
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in found], indent=2))
        return
    if not found:
        click.echo(f"no reports yet in {_reports_root()} (eventops reports run weekly)")
        return
    _table(
        ["name", "kind", "period", "created", "html"],
        [
            [
                r.name,
                r.kind,
                f"{r.period_start:%Y-%m-%d} to {r.period_end:%Y-%m-%d}"
                if r.period_start and r.period_end
                else "-",
                f"{r.created_at.astimezone(UTC):%Y-%m-%d %H:%M}",
                str(r.html_path),
            ]
            for r in found
        ],
    )


@reports.command("show")
@click.argument("name", required=False)
@click.option("--markdown", is_flag=True, help="The Markdown file instead of the HTML.")
@click.option("--print", "print_it", is_flag=True, help="Print the Markdown to stdout.")
@config_errors_exit_2
def reports_show(name: str | None, markdown: bool, print_it: bool) -> None:
    """The path of report NAME (default: the newest), to open in a browser."""
    from core.reports.registry import get_report, list_reports

    root = _reports_root()
    if name is None:
        found = list_reports(root.parent, root)
        report = found[0] if found else None
    else:
        report = get_report(root.parent, name, root)
    if report is None:
        raise click.ClickException(
            f"no report {name!r} in {root}" if name else f"no reports yet in {root}"
        )
    if print_it:
        click.echo(report.md_path.read_text())
        return
    click.echo(str(report.md_path if markdown else report.html_path))


@reports.group("run")
def reports_run() -> None:
    """Build a report now, here, instead of waiting for beat."""


@reports_run.command("weekly")
@click.option("--week", help="Any date in the week to report (default: last complete week).")
@config_errors_exit_2
def reports_run_weekly(week: str | None) -> None:
    """Build the weekly performance report and print where it is."""
    from core.reports.weekly import build_weekly_report
    from models.db import session_scope

    start = None
    if week is not None:
        try:
            start = datetime.fromisoformat(week).replace(tzinfo=UTC)
        except ValueError:
            raise click.BadParameter(
                "must be a date such as 2026-11-16", param_hint="--week"
            ) from None
    with session_scope() as session:
        report = build_weekly_report(session, checked_config(), _reports_root(), week_start=start)
    click.echo(f"{report.name}: {report.html_path}")
    click.echo(f"{' ' * len(report.name)}  {report.md_path}")


@reports_run.command("capacity")
@config_errors_exit_2
def reports_run_capacity() -> None:
    """Take a capacity snapshot of the platform database now and check the limits."""
    from tasks.reports import capacity_snapshot

    click.echo(json.dumps(capacity_snapshot.run(), indent=2, default=str))


@reports.command("capacity")
@click.option("--json", "as_json", is_flag=True)
@config_errors_exit_2
def reports_capacity(as_json: bool) -> None:
    """Forecasts of every tracked figure, days to each limit, and the scaling thresholds."""
    from core.capacity import forecasts, scaling_advice
    from models.db import session_scope

    config = checked_config()
    with session_scope() as session:
        results = forecasts(session, config.capacity)
        advice = scaling_advice(session, config.capacity)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "forecasts": [f.as_dict() for f in results],
                    "scaling": [a.__dict__ for a in advice],
                },
                indent=2,
                default=str,
            )
        )
        return
    if not results:
        click.echo("no capacity samples yet (eventops reports run capacity)")
    else:
        _table(
            ["figure", "now", "per day", "limit", "days to limit", "model"],
            [
                [
                    f.metric + (f" ({f.subject})" if f.subject != "platform" else ""),
                    "-" if f.current is None else f"{f.current:,.0f}",
                    "-" if f.slope_per_day is None else f"{f.slope_per_day:,.2f}",
                    "-" if f.limit is None else f"{f.limit:,.0f}",
                    "-" if f.days_to_limit is None else f"{f.days_to_limit:,.0f}",
                    f.why,
                ]
                for f in results
            ],
        )
    click.echo("")
    _table(
        ["action", "when", "now", "due"],
        [
            [a.action, a.threshold, a.current, "-" if a.due is None else ("yes" if a.due else "no")]
            for a in advice
        ],
    )


# --- logs ------------------------------------------------------------------------------


@click.group()
def logs() -> None:
    """Ingested platform logs, error patterns and log rotation."""


@logs.command("ingest")
@config_errors_exit_2
def logs_ingest() -> None:
    """Read what is new in every log source now, then analyse error patterns."""
    from core.logs.ingest import ingest_all, with_paths_under
    from core.logs.patterns import analyze
    from models.db import session_scope
    from workers.settings import get_settings

    config = checked_config()
    if not config.logs.sources:
        raise click.ClickException("no logs.sources in the config")
    sources = with_paths_under(config.logs, get_settings().var_dir)
    result: dict[str, Any] = {"sources": ingest_all(session_scope, sources)}
    with session_scope() as session:
        result["patterns"] = analyze(session, config)
    click.echo(json.dumps(result, indent=2, default=str))


@logs.command("patterns")
@click.option("--status", type=click.Choice(["active", "resolved"]), default=None)
@click.option("--limit", default=30, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@config_errors_exit_2
def logs_patterns(status: str | None, limit: int, as_json: bool) -> None:
    """Error patterns, most recently seen first."""
    from core.logs.patterns import pattern_rows
    from models.db import session_scope

    checked_config()
    with session_scope() as session:
        rows = pattern_rows(session, limit, status)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "fingerprint": p.fingerprint,
                        "service": p.service,
                        "kind": p.kind,
                        "template": p.template,
                        "classification": p.classification,
                        "status": p.status,
                        "occurrences": p.occurrences,
                        "first_seen": p.first_seen.isoformat(),
                        "last_seen": p.last_seen.isoformat(),
                    }
                    for p in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:
        click.echo("no error patterns yet")
        return
    _table(
        ["fingerprint", "service", "class", "status", "count", "last seen", "pattern"],
        [
            [
                p.fingerprint,
                p.service,
                p.classification,
                p.status,
                f"{p.occurrences:,}",
                f"{p.last_seen.astimezone(UTC):%Y-%m-%d %H:%M}",
                p.template[:80],
            ]
            for p in rows
        ],
    )


@logs.command("resolve")
@click.argument("fingerprint")
@click.option("--by", default="cli", show_default=True, help="Who fixed it.")
@config_errors_exit_2
def logs_resolve(fingerprint: str, by: str) -> None:
    """Mark an error pattern fixed: if it comes back, it counts as regressed."""
    from core.logs.patterns import resolve_pattern
    from models.db import session_scope

    with session_scope() as session:
        if not resolve_pattern(session, fingerprint, checked_config(), by=by):
            raise click.ClickException(f"no error pattern {fingerprint!r}")
    click.echo(f"pattern {fingerprint} resolved by {by}")


@logs.command("files")
@config_errors_exit_2
def logs_files() -> None:
    """Each log file read so far: where, how far, and its malformed lines."""
    from sqlalchemy import select

    from models.db import session_scope
    from models.logs import LogFile

    checked_config()
    with session_scope() as session:
        rows = list(session.scalars(select(LogFile).order_by(LogFile.source, LogFile.path)))
    if not rows:
        click.echo("no log files read yet")
        return
    _table(
        ["source", "path", "offset", "size", "lines", "malformed", "restarts"],
        [
            [
                r.source,
                r.path,
                f"{r.offset:,}",
                f"{r.size:,}",
                f"{r.lines:,}",
                f"{r.malformed:,}",
                str(r.restarts),
            ]
            for r in rows
        ],
    )
    for r in rows:
        for sample in r.malformed_sample:
            click.echo(f"  {r.path}@{sample['offset']}: {sample['reason']}: {sample['line'][:100]}")


@logs.command("rotate")
@config_errors_exit_2
def logs_rotate() -> None:
    """Rotate, compress and prune the configured log directories now."""
    from tasks.reports import rotate_logs

    checked_config()
    click.echo(json.dumps(rotate_logs.run(), indent=2, default=str))
