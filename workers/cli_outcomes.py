"""`eventops outcomes ...`: eventops' own outcome data: partitions, rollups, retention and
the performance reviews, inspected or run here and now."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from workers.cli_output import config_errors_exit_2, print_json


@click.group()
def outcomes() -> None:
    """Outcome partitions, rollups, retention and performance reviews."""


@outcomes.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def status(as_json: bool) -> None:
    """Partitions, the default partition, rollup watermarks and late minutes waiting."""
    from sqlalchemy import text

    from core.clock import utcnow
    from core.partitions import health, partitions
    from core.rollups import watermarks
    from models.db import session_scope

    now = utcnow()
    with session_scope() as session:
        days = [p.day for p in partitions(session)]
        figures = health(session, now)
        marks = watermarks(session)
        dirty = session.scalar(text("SELECT count(*) FROM rollup_dirty")) or 0
    data = {
        "partitions": len(days),
        "oldest_partition": days[0].isoformat() if days else None,
        "newest_partition": days[-1].isoformat() if days else None,
        "days_ahead": int(figures["outcome_partitions_ahead_days"]),
        "default_partition_rows": int(figures["outcome_default_partition_rows"]),
        "minute_watermark": marks["minute"].isoformat() if "minute" in marks else None,
        "hour_watermark": marks["hour"].isoformat() if "hour" in marks else None,
        "rollup_lag_s": figures["outcome_rollup_lag_s"],
        "late_minutes_waiting": int(dirty),
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        click.echo(f"{key.replace('_', ' '):<{width}}  {'-' if value is None else value}")


@outcomes.command("maintain")
@config_errors_exit_2
def maintain_now() -> None:
    """Create partitions ahead, drop those past retention once rolled up, trim rollups
    (what the hourly maintenance.partitions task does)."""
    from core.partitions import maintain
    from models.db import session_scope
    from workers.settings import get_config

    with session_scope() as session:
        summary = maintain(session, get_config().retention)
    print_json(summary)


@outcomes.command("rollup")
@config_errors_exit_2
def rollup_now() -> None:
    """Roll outcomes up to now minus the settle delay (one run: at most 12 hours)."""
    from core.rollups import run_rollup
    from models.db import session_scope
    from workers.settings import get_config

    with session_scope() as session:
        summary = run_rollup(session, get_config().retention)
    print_json(summary)


@outcomes.command("review")
@click.option(
    "--period", type=click.Choice(["daily", "weekly"]), default="daily", show_default=True
)
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="First day of the period (UTC); default: the last complete day or ISO week.",
)
@config_errors_exit_2
def review(period: str, start: datetime | None) -> None:
    """Write the performance review of a day or a week and print it (Markdown)."""
    from core.performance_review import performance_review
    from models.db import session_scope

    with session_scope() as session:
        result = performance_review(
            session,
            "daily" if period == "daily" else "weekly",
            start.replace(tzinfo=UTC) if start is not None else None,
        )
    click.echo(result["report"])
