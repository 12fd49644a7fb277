"""Every metric the Grafana dashboard queries is one /metrics really exposes."""

from __future__ import annotations

import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from core import pipeline
from core.clock import utcnow
from core.incidents import Problem, raise_problem
from core.probing import ProbeResult
from core.schedule import sync_checks
from models.db import session_scope
from models.tables import Check
from tests.conftest import make_config
from tests.unit.test_observability_deploy import dashboard_metric_names
from web.metrics import render
from workers.settings import Settings
from workers.task_metrics import record_outcomes, record_task


def test_every_metric_the_grafana_dashboard_queries_is_exported(
    clean_db: str, clean_redis: str
) -> None:
    config = make_config()
    now = utcnow()
    with session_scope() as session:
        sync_checks(session, config, now=now)
        check_id = session.scalars(select(Check.id)).one()
        # One probe, so the per-check latency series exists too.
        pipeline.record_outcomes(
            session,
            [ProbeResult(check_id, now, now, "up", 12.0, 200)],
            config,
            now=now,
        )
        raise_problem(
            session,
            Problem(fingerprint="check:api", title="api is down", severity="critical", summary=""),
            config,
        )
    client = redis.Redis.from_url(clean_redis)
    record_task(client, "probes.run_batch", 0.3, "SUCCESS")
    record_outcomes(client, {"probed": 3, "down": 1})

    exposition = render(Settings(broker_url=clean_redis)).decode()
    exported = {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    missing = dashboard_metric_names() - exported
    assert missing == set(), f"the dashboard queries metrics /metrics does not have: {missing}"
