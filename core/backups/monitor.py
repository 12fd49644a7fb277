"""Monitors on the backups themselves: their state becomes metrics that alert rules read."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.metrics import record_metrics
from models.tables import Backup, RestoreRun

LOGICAL_KINDS = ("hourly", "daily")
HISTORY = 10  # recent backups a new one is compared with


def backup_metrics(
    session: Session, rpo: timedelta, rto: timedelta, now: datetime | None = None
) -> dict[str, float]:
    """Measure the backups and write the figures to the metrics table (subject `database`).

    - `backup_verified_age_over_rpo`: age of the newest verified backup's snapshot divided by
      the RPO; above 1 means the newest point we can prove restorable is too old.
    - `backup_failed`, `backup_verify_failed`, `restore_test_failed`: 1 when the latest of each
      failed, else 0.
    - `backup_size_ratio`, `backup_duration_ratio`: the newest logical backup's size and
      duration over the median of the previous ten of its kind; a silent partial dump is
      much smaller or faster than its history.
    - `restore_rto_over_objective`: the latest restore test's wall time over the RTO.

    Nothing is written before the first backup exists: a fresh install has no history to
    judge, and the `backup_failed` figure covers a first backup that fails.
    """
    now = now or utcnow()
    figures: dict[str, float] = {}
    logical = list(
        session.scalars(
            select(Backup)
            .where(Backup.kind.in_(LOGICAL_KINDS), Backup.state != "running")
            .order_by(Backup.started_at.desc())
            .limit(HISTORY * 4)
        )
    )
    if not logical:
        return figures
    figures["backup_failed"] = float(logical[0].state == "failed")
    verified = [b for b in logical if b.verify_state == "verified" and b.snapshot_at]
    newest_verified_at = verified[0].snapshot_at if verified else logical[-1].started_at
    assert newest_verified_at is not None
    figures["backup_verified_age_over_rpo"] = (now - newest_verified_at) / rpo
    checked = [b for b in logical if b.verify_state in ("verified", "corrupt")]
    if checked:
        figures["backup_verify_failed"] = float(checked[0].verify_state == "corrupt")
    succeeded = [b for b in logical if b.state == "succeeded"]
    if succeeded:
        newest = succeeded[0]
        history = [b for b in succeeded[1:] if b.kind == newest.kind][:HISTORY]
        if len(history) >= 3:
            sizes = [b.size_bytes for b in history if b.size_bytes]
            durations = [b.duration_s for b in history if b.duration_s]
            if sizes and newest.size_bytes is not None:
                figures["backup_size_ratio"] = newest.size_bytes / statistics.median(sizes)
            if durations and newest.duration_s is not None:
                figures["backup_duration_ratio"] = newest.duration_s / statistics.median(durations)
    test = session.scalars(
        select(RestoreRun)
        .where(RestoreRun.kind == "restore-test", RestoreRun.state != "running")
        .order_by(RestoreRun.started_at.desc())
        .limit(1)
    ).first()
    if test is not None:
        figures["restore_test_failed"] = float(test.state == "failed")
        if test.rto_s is not None:
            figures["restore_rto_over_objective"] = test.rto_s / rto.total_seconds()
    record_metrics(session, ((name, "database", value, now) for name, value in figures.items()))
    return figures
