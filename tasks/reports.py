"""Log ingestion, error patterns, capacity planning and the weekly report.

Thin tasks over core/logs, core/capacity.py and core/reports; each returns a small summary.
Every effect is idempotent: ingestion is keyed by (file, offset), capacity samples by
(metric, subject, time), the weekly report by its ISO week (rebuilt in place), so a second
beat or a redelivered task changes nothing that matters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.clock import utcnow
from models.db import session_scope
from tasks.retry import RETRY
from workers.app import app
from workers.settings import get_config, get_settings


def reports_root() -> Path:
    from core.reports.registry import reports_dir

    return reports_dir(get_settings().var_dir, get_config().reports.directory)


def rotation_targets() -> list[tuple[Any, Path]]:
    """(target, directory) for eventops' own logs and every configured directory."""
    from core.logs.rotation import resolve_directory

    rotation = get_config().logs.rotation
    var_dir = get_settings().var_dir
    targets = [(t, resolve_directory(t, var_dir)) for t in rotation.directories]
    if rotation.own_logs:
        targets.insert(0, (rotation.own, resolve_directory(rotation.own, var_dir)))
    return targets


@app.task(name="logs.ingest", soft_time_limit=240, time_limit=300, **RETRY)
def ingest_logs() -> dict[str, Any]:
    """Read what is new in every configured log source into `log_entries`."""
    from core.logs.ingest import ingest_all, with_paths_under

    config = get_config().logs
    if not config.sources:
        return {"skipped": "no logs.sources configured"}
    return ingest_all(session_scope, with_paths_under(config, get_settings().var_dir))


@app.task(name="logs.patterns", soft_time_limit=110, time_limit=120, **RETRY)
def analyze_patterns() -> dict[str, Any]:
    """Classify the error patterns ingested since the last run; bursts become incidents."""
    from core.logs.patterns import analyze

    with session_scope() as session:
        return analyze(session, get_config())


@app.task(name="logs.rotate", soft_time_limit=1700, time_limit=1800, **RETRY)
def rotate_logs() -> dict[str, Any]:
    """Rotate, compress and prune eventops' own logs and the configured directories, and
    delete ingested entries past `logs.retention_days`."""
    from core.logs.ingest import prune_entries
    from core.logs.rotation import rotate_directory

    now = utcnow()
    result: dict[str, Any] = {}
    for target, directory in rotation_targets():
        with session_scope() as session:
            result[str(directory)] = rotate_directory(session, target, directory, now).as_dict()
    with session_scope() as session:
        result["entries_deleted"] = prune_entries(session, get_config().logs.retention_days, now)
    return result


@app.task(name="reports.capacity_snapshot", soft_time_limit=550, time_limit=600, **RETRY)
def capacity_snapshot() -> dict[str, Any]:
    """Measure the platform's capacity figures, then forecast them against their limits."""
    from core.backups.tools import Conn
    from core.capacity import check_limits, take_snapshot

    config = get_config()
    settings = get_settings()
    if not config.capacity.enabled:
        return {"skipped": "capacity is disabled in the config"}
    url = settings.platform_database_url
    result: dict[str, Any] = {}
    if url is None:
        result["snapshot"] = {"skipped": "EVENTOPS_PLATFORM_DATABASE_URL is not set"}
    else:
        # The platform's uploads (the directories backed up as files) are its storage;
        # without any, eventops' own var directory (backups, logs) is what grows here.
        storage = (
            config.capacity.storage_paths
            or [spec.directory for spec in config.backups.files]
            or [settings.var_dir]
        )
        with session_scope() as session:
            result["snapshot"] = take_snapshot(
                session, Conn.from_url(url.get_secret_value()), config.capacity, storage
            )
    with session_scope() as session:
        result["limits"] = check_limits(session, config)
    return result


@app.task(name="reports.weekly_performance", soft_time_limit=550, time_limit=600, **RETRY)
def weekly_performance(week_start: str | None = None) -> dict[str, Any]:
    """Build last week's performance report (or the week of `week_start`, ISO date)."""
    from datetime import UTC, datetime

    from core.reports.weekly import build_weekly_report

    start = None
    if week_start is not None:
        start = datetime.fromisoformat(week_start)
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
    with session_scope() as session:
        report = build_weekly_report(session, get_config(), reports_root(), week_start=start)
    return {"name": report.name, "html": str(report.html_path), "md": str(report.md_path)}
