"""Retention of backups: grandfather-father-son tiers, never the newest verified backup."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.clock import utcnow
from models.config import RetentionConfig
from models.tables import Backup, RestoreRun

log = logging.getLogger(__name__)

SessionFactory = Callable[[], AbstractContextManager[Session]]

TIERS = ("hourly", "daily", "weekly", "monthly")


@dataclass(frozen=True)
class Point:
    """A restorable backup as retention sees it."""

    id: int
    at: datetime  # snapshot_at, else slot
    verified: bool
    kind: str = ""


def _bucket(tier: str, at: datetime) -> tuple[int, ...]:
    at = at.astimezone(UTC)
    if tier == "hourly":
        return (at.year, at.month, at.day, at.hour)
    if tier == "daily":
        return (at.year, at.month, at.day)
    if tier == "weekly":
        iso = at.isocalendar()
        return (iso.year, iso.week)
    return (at.year, at.month)


def plan_retention(
    points: Iterable[Point], retention: RetentionConfig
) -> tuple[dict[int, list[str]], list[int]]:
    """Which backups to keep, with why, and which to delete.

    Each tier keeps the newest backup of each of its N most recent periods (UTC hours,
    days, ISO weeks, months) that hold a backup: counted over periods with backups rather
    than calendar periods back from now, so a long outage never ages every backup out.
    The newest backup and the newest verified one are always kept.
    """
    # Newest first; on equal times prefer a verified one, then the higher id.
    ordered = sorted(points, key=lambda p: (p.at, p.verified, p.id), reverse=True)
    keep: dict[int, list[str]] = {}
    for tier in TIERS:
        left = getattr(retention, tier)
        last: tuple[int, ...] | None = None
        for point in ordered:
            if left <= 0:
                break
            bucket = _bucket(tier, point.at)
            if bucket != last:
                keep.setdefault(point.id, []).append(tier)
                last = bucket
                left -= 1
    if ordered:
        keep.setdefault(ordered[0].id, []).append("newest")
    verified = next((p for p in ordered if p.verified), None)
    if verified is not None:
        keep.setdefault(verified.id, []).append("newest-verified")
    delete = [p.id for p in ordered if p.id not in keep]
    return keep, delete


def _remove(path: Path) -> bool:
    """Remove a backup's file (or directory); False when it was already gone."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    return True


def apply_retention(
    sessions: SessionFactory,
    retention: RetentionConfig,
    now: Callable[[], datetime] = utcnow,
    kinds: Sequence[str] = ("hourly", "daily"),
) -> dict[str, Any]:
    """Apply the tiers to the successful, undeleted backups of `kinds` taken together (an
    hourly and a daily dump are both points to restore to). Deleted backups lose their
    file but keep their row, with `deleted_at` set, so the history stays. Running backups
    and backups a running restore test or drill is reading are never touched."""
    at = now()
    kinds = list(kinds)
    with sessions() as session:
        rows = session.execute(
            select(
                Backup.id,
                Backup.kind,
                Backup.slot,
                Backup.snapshot_at,
                Backup.verify_state,
                Backup.path,
            )
            .where(
                Backup.kind.in_(kinds),
                Backup.state == "succeeded",
                Backup.deleted_at.is_(None),
            )
            .order_by(Backup.id)
            .with_for_update()
        ).all()
        running = session.scalar(
            select(func.count())
            .select_from(Backup)
            .where(Backup.kind.in_(kinds), Backup.state == "running")
        )
        in_use = {
            backup_id
            for backup_id in session.scalars(
                select(RestoreRun.backup_id).where(
                    RestoreRun.state == "running", RestoreRun.backup_id.is_not(None)
                )
            )
        }
        points = [
            Point(r.id, r.snapshot_at or r.slot, r.verify_state == "verified", r.kind) for r in rows
        ]
        keep, delete = plan_retention(points, retention)
        for backup_id in delete:
            if backup_id in in_use:
                keep[backup_id] = ["in-use"]
        delete = [i for i in delete if i not in in_use]
        if delete:
            session.execute(
                update(Backup)
                .where(
                    Backup.id.in_(delete),
                    Backup.state == "succeeded",
                    Backup.deleted_at.is_(None),
                )
                .values(
                    deleted_at=at,
                    details=Backup.details.op("||")(
                        func.jsonb_build_object("deleted_by", "retention")
                    ),
                )
            )
    # The rows are marked first and the files removed after the commit: a crash in between
    # leaves an orphaned file, never a live row whose file is gone.
    by_id = {r.id: r for r in rows}
    deleted: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for backup_id in delete:
        row = by_id[backup_id]
        removed = False
        if row.path:
            try:
                removed = _remove(Path(row.path))
            except OSError as exc:
                log.warning("retention could not remove %s: %s", row.path, exc)
                errors.append({"id": backup_id, "path": row.path, "error": str(exc)})
        deleted.append(
            {
                "id": backup_id,
                "kind": row.kind,
                "at": (row.snapshot_at or row.slot).isoformat(),
                "reason": "outside every retention tier",
                "file_removed": removed,
            }
        )
    kept = [
        {
            "id": r.id,
            "kind": r.kind,
            "at": (r.snapshot_at or r.slot).isoformat(),
            "reasons": keep[r.id],
        }
        for r in sorted(rows, key=lambda r: r.snapshot_at or r.slot, reverse=True)
        if r.id in keep
    ]
    return {
        "kinds": kinds,
        "kept_count": len(kept),
        "deleted_count": len(deleted),
        "running_skipped": running or 0,
        "kept": kept,
        "deleted": deleted,
        "errors": errors,
    }
