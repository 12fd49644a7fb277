"""The workers-and-queues summary the dashboard and `maintenance status` read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.maintenance.summary import workers_and_queues
from core.metrics import record_metrics
from models.db import session_scope
from models.maintenance import WorkerHeartbeat

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def test_summary_shows_a_silent_worker_as_not_alive_and_the_newest_queue_figures(
    clean_db: str,
) -> None:
    with session_scope() as session:
        for name, seen in (
            ("celery@a", NOW - timedelta(seconds=10)),
            ("celery@b", NOW - timedelta(minutes=5)),
        ):
            session.add(
                WorkerHeartbeat(
                    hostname=name,
                    pid=1,
                    started_at=NOW - timedelta(hours=1),
                    last_seen=seen,
                    cpu=0.25,
                    memory=0.5,
                    disk=0.75,
                    queues=["pipeline"],
                )
            )
        record_metrics(
            session,
            [
                ("queue_length", "pipeline", 3, NOW - timedelta(seconds=60)),
                ("queue_length", "pipeline", 7, NOW - timedelta(seconds=20)),
                ("queue_oldest_age_s", "pipeline", 42.0, NOW - timedelta(seconds=20)),
                ("queue_length", "slow", 99, NOW - timedelta(minutes=30)),  # stale
            ],
        )
    with session_scope() as session:
        summary = workers_and_queues(session, NOW, queue_names=("pipeline", "slow"))
    assert [(w["name"], w["alive"], w["memory"]) for w in summary["workers"]] == [
        ("celery@a", True, 0.5),
        ("celery@b", False, 0.5),
    ]
    assert summary["queues"] == [
        {"name": "pipeline", "length": 7, "oldest_age_s": 42.0},
        {"name": "slow", "length": None, "oldest_age_s": None},
    ]
