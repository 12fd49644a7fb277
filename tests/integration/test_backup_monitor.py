"""Monitors on the backups: their state becomes metrics, and the shipped rules alert on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from core.backups.monitor import backup_metrics
from core.rules import evaluate_rules
from models.config import load_config
from models.db import session_scope
from models.tables import Backup, Incident, Metric, RestoreRun
from tasks.backups import slot_for

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def add_backup(hours_ago: float, **fields: object) -> None:
    at = T0 - hours_ago * HOUR
    row = {
        "kind": "hourly",
        "slot": at,
        "state": "succeeded",
        "started_at": at,
        "heartbeat_at": at,
        "finished_at": at + timedelta(seconds=30),
        "snapshot_at": at,
        "size_bytes": 1_000_000,
        "duration_s": 30.0,
        "verify_state": "verified",
    } | fields
    with session_scope() as session:
        session.add(Backup(**row))


def measure(now: datetime = T0) -> dict[str, float]:
    with session_scope() as session:
        return backup_metrics(session, rpo=HOUR, rto=4 * HOUR, now=now)


def test_no_backups_yet_means_no_figures(clean_db: str) -> None:
    assert measure() == {}


def test_healthy_history_gives_healthy_figures(clean_db: str) -> None:
    for hours_ago in (5, 4, 3, 2, 1, 0.5):
        add_backup(hours_ago)
    figures = measure()
    assert figures["backup_verified_age_over_rpo"] == 0.5
    assert figures["backup_failed"] == 0
    assert figures["backup_verify_failed"] == 0
    assert figures["backup_size_ratio"] == 1.0
    with session_scope() as session:
        written = session.scalars(select(Metric.name).where(Metric.subject == "database")).all()
    assert set(written) == set(figures)


def test_a_stale_verified_backup_is_over_the_rpo_even_if_newer_ones_are_unverified(
    clean_db: str,
) -> None:
    add_backup(3)
    add_backup(1, verify_state="unverified")
    add_backup(0.5, verify_state="corrupt")
    figures = measure()
    assert figures["backup_verified_age_over_rpo"] == 3.0
    assert figures["backup_verify_failed"] == 1.0


def test_a_much_smaller_or_faster_backup_stands_out_from_its_history(clean_db: str) -> None:
    for hours_ago in (5, 4, 3, 2):
        add_backup(hours_ago)
    add_backup(1, size_bytes=200_000, duration_s=3.0)
    figures = measure()
    assert figures["backup_size_ratio"] == 0.2
    assert figures["backup_duration_ratio"] == 0.1


def test_restore_test_failure_and_slow_restores_are_measured(clean_db: str) -> None:
    add_backup(1)
    with session_scope() as session:
        session.add(
            RestoreRun(
                kind="restore-test",
                slot=T0,
                state="failed",
                started_at=T0,
                heartbeat_at=T0,
                rto_s=5 * 3600.0,
            )
        )
    figures = measure()
    assert figures["restore_test_failed"] == 1.0
    assert figures["restore_rto_over_objective"] == 1.25


def test_the_shipped_rules_page_on_a_stale_backup_and_a_failed_verification(
    clean_db: str, repo_root: Path
) -> None:
    config = load_config(repo_root / "config" / "eventops.yaml")
    add_backup(3)
    add_backup(0.5, verify_state="corrupt")
    measure()
    with session_scope() as session:
        evaluate_rules(session, config, T0 + timedelta(seconds=1))
        opened = {(i.rule, i.severity) for i in session.scalars(select(Incident))}
    assert opened == {
        ("backup-older-than-rpo", "critical"),
        ("backup-verification-failed", "critical"),
    }


def test_slots_are_the_start_of_the_hour_day_week_and_month() -> None:
    at = datetime(2026, 11, 27, 9, 41, 7, tzinfo=UTC)  # a Friday
    assert slot_for("hour", at) == datetime(2026, 11, 27, 9, tzinfo=UTC)
    assert slot_for("day", at) == datetime(2026, 11, 27, tzinfo=UTC)
    assert slot_for("week", at) == datetime(2026, 11, 23, tzinfo=UTC)
    assert slot_for("month", at) == datetime(2026, 11, 1, tzinfo=UTC)
