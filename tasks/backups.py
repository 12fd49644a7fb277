"""Backup tasks on the slow queue: dumps, verification, restore tests, drills, retention.

Each task derives its slot from the time it runs (the hour for hourly dumps, the day for
daily ones), so a duplicate tick, a second beat or a redelivery finds the slot's row and does
nothing; a job outliving the broker's visibility timeout is protected by its row's lease.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from core.backups.tools import Conn
from core.clock import utcnow
from models.config import BackupsConfig
from models.db import session_scope
from workers.app import app
from workers.settings import get_config, get_settings

SLOW = {
    "soft_time_limit": 3300,
    "time_limit": 3600,
    "autoretry_for": (DBAPIError,),
    "retry_backoff": True,
    "max_retries": 3,
}


def slot_for(period: str, now: datetime) -> datetime:
    """The slot a run belongs to: the start of its hour, day, ISO week or month (UTC)."""
    now = now.astimezone(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    if period == "hour":
        return hour
    day = hour.replace(hour=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown period {period!r}")


class BackupsNotConfigured(RuntimeError):
    pass


def _store_and_key() -> tuple[Path, str | None]:
    """The backups directory (created) and the encryption passphrase, if any."""
    settings = get_settings()
    directory = get_config().backups.directory or settings.var_dir / "backups"
    directory.mkdir(parents=True, exist_ok=True)
    return directory, settings.backup_key.get_secret_value() if settings.backup_key else None


def _setup() -> tuple[BackupsConfig, Conn, Path, str | None]:
    url = get_settings().platform_database_url
    if url is None:
        raise BackupsNotConfigured("EVENTOPS_PLATFORM_DATABASE_URL is not set")
    directory, key = _store_and_key()
    return get_config().backups, Conn.from_url(url.get_secret_value()), directory, key


def _skip_unless_configured() -> dict[str, Any] | None:
    if not get_config().backups.enabled:
        return {"skipped": "backups are disabled in the config"}
    if get_settings().platform_database_url is None:
        return {"skipped": "EVENTOPS_PLATFORM_DATABASE_URL is not set"}
    return None


@app.task(name="backups.dump", **SLOW)
def dump(kind: str = "hourly") -> dict[str, Any]:
    """A logical backup (pg_dump custom format) for this hour's or this day's slot."""
    if skipped := _skip_unless_configured():
        return skipped
    from core.backups.logical import run_logical_backup

    config, conn, directory, key = _setup()
    slot = slot_for("day" if kind == "daily" else "hour", utcnow())
    return run_logical_backup(session_scope, conn, config, directory, kind, slot, key)


@app.task(name="backups.base", **SLOW)
def base() -> dict[str, Any]:
    """Today's base backup for point-in-time recovery (with `backups.pitr: true`)."""
    if skipped := _skip_unless_configured():
        return skipped
    if not get_config().backups.pitr:
        return {"skipped": "backups.pitr is off"}
    from core.backups.pitr import run_base_backup

    _, conn, directory, _ = _setup()
    return run_base_backup(session_scope, conn, directory, slot_for("day", utcnow()))


@app.task(name="backups.verify", **SLOW)
def verify() -> dict[str, Any]:
    """Verify every unverified backup: SHA-256, then a full read of the archive."""
    if skipped := _skip_unless_configured():
        return skipped
    from core.backups.logical import verify_due_backups

    _, _, _, key = _setup()
    return verify_due_backups(session_scope, key)


@app.task(name="backups.restore_test", **SLOW)
def restore_test(backup_id: int | None = None) -> dict[str, Any]:
    """Restore the newest verified backup into a scratch database and compare counts."""
    if skipped := _skip_unless_configured():
        return skipped
    from core.backups.logical import restore_test as run_restore_test

    config, conn, _, key = _setup()
    slot = utcnow() if backup_id is not None else slot_for("week", utcnow())
    return run_restore_test(session_scope, conn, backup_id, slot, key, config=config)


@app.task(name="backups.drill", **SLOW)
def drill() -> dict[str, Any]:
    """The monthly disaster recovery drill: restore into a fresh instance, time to healthy."""
    if skipped := _skip_unless_configured():
        return skipped
    from core.backups.drill import run_drill

    config, _, directory, key = _setup()
    return run_drill(
        session_scope,
        None,
        directory / "drills",
        slot_for("month", utcnow()),
        key,
        rto_objective=config.rto,
        rpo_objective=config.rpo,
    )


@app.task(name="backups.files", **SLOW)
def files() -> dict[str, Any]:
    """Incremental backups of the configured upload directories and of the config files."""
    if not get_config().backups.enabled:
        return {"skipped": "backups are disabled in the config"}
    from core.backups.files import backup_config_files, backup_files

    config = get_config().backups
    store, key = _store_and_key()
    slot = slot_for("day", utcnow())
    results = {
        spec.name: backup_files(session_scope, spec.name, spec.directory, store, slot, key)
        for spec in config.files
    }
    paths = config.config_files or [get_settings().config_file]
    results["config"] = backup_config_files(session_scope, paths, store, slot, key)
    return results


@app.task(name="backups.retention", **SLOW)
def retention() -> dict[str, Any]:
    """Delete backups outside the retention tiers, never the newest verified one."""
    from core.backups.retention import apply_retention

    return apply_retention(session_scope, get_config().backups.retention)


@app.task(
    name="backups.monitor",
    soft_time_limit=50,
    time_limit=60,
    autoretry_for=(DBAPIError,),
    retry_backoff=True,
    max_retries=3,
)
def monitor() -> dict[str, float]:
    """Turn the backups' state into metrics for the alert rules."""
    from core.backups.monitor import backup_metrics

    config = get_config().backups
    with session_scope() as session:
        return backup_metrics(session, config.rpo, config.rto)
