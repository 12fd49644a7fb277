"""The maintenance tasks' bodies, run in this process against the test's Postgres and Redis
(the real worker runs them in tests/integration/test_selfmon_processes.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models.db import session_scope
from models.maintenance import SelfmonMark
from models.tables import Metric
from tasks import maintenance as tasks
from workers.app import app


@pytest.fixture
def test_broker(clean_redis: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(app.conf, "broker_url", clean_redis)
    return clean_redis


def metric_names() -> set[str]:
    with session_scope() as session:
        return set(session.scalars(select(Metric.name).distinct()).all())


def test_collectors_write_postgres_and_redis_figures(clean_db: str, test_broker: str) -> None:
    postgres = tasks.collect_postgres_metrics()
    redis_summary = tasks.collect_redis_metrics()
    assert postgres["samples"] > 10 and postgres["unreachable"] == {}
    assert redis_summary["samples"] >= 12  # 5 broker figures (no maxmemory) + 2 per queue...
    names = metric_names()
    assert {"pg_connections_ratio", "pg_wraparound_headroom", "pg_reachable"} <= names
    assert {"redis_eviction_unsafe", "queue_length", "queue_oldest_age_s"} <= names
    with session_scope() as session:
        subjects = set(
            session.scalars(select(Metric.subject).where(Metric.name == "pg_reachable")).all()
        )
    assert subjects == {"eventops-db"}  # no platform database URL in this test


def test_heartbeat_then_check_reports_what_is_missing(clean_db: str, test_broker: str) -> None:
    tasks.heartbeat()
    with session_scope() as session:
        assert session.get(SelfmonMark, "beat") is not None
    summary = tasks.check()
    # No sweep has run and no worker reported in this process; beat is fresh.
    assert set(summary["failing"]) == {"sweeper:escalation-sweeper", "worker:any"}
    assert "deadmans_switch" not in summary  # not configured
    with session_scope() as session:
        failing = session.scalar(
            select(func.max(Metric.value)).where(Metric.name == "selfmon_failing")
        )
    assert failing == 2
