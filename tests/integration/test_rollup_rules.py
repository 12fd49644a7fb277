"""The rule engine on rollups plus the raw edge gives the verdicts it gives on raw outcomes
alone, on the same data (real Postgres, injected clock)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from core.rollups import run_rollup
from core.rules import _COMPARE, evaluate_rules, outcome_samples
from core.schedule import sync_checks
from models.config_retention import OutcomeRetentionConfig
from models.db import session_scope
from models.tables import Check, Incident, Outcome
from tests.conftest import make_config

T0 = datetime(2026, 10, 5, 0, 0, tzinfo=UTC)
RETENTION = OutcomeRetentionConfig(settle_minutes=2, rules_rollup_window_minutes=60)
RULES: list[dict[str, Any]] = [
    {
        "name": "uptime-critical",
        "metric": "uptime",
        "window": "24h",
        "op": "<",
        "threshold": 0.99,
        "severity": "critical",
        "min_samples": 10,
        "category": "availability",
    },
    {
        "name": "error-rate-2h",
        "metric": "error_rate",
        "window": "2h",
        "op": ">",
        "threshold": 0.02,
        "severity": "warning",
    },
    {
        "name": "slow-average-3h",
        "metric": "response_time",
        "aggregate": "avg",
        "window": "3h",
        "op": ">",
        "threshold": 300,
        "severity": "warning",
    },
    {
        "name": "slow-p95-6h",
        "metric": "response_time",
        "aggregate": "p95",
        "window": "6h",
        "op": ">",
        "threshold": 900,
        "severity": "warning",
    },
    {
        "name": "slowest-probe-90m",
        "metric": "response_time",
        "aggregate": "max",
        "window": "90m",
        "op": ">=",
        "threshold": 2500,
        "severity": "info",
    },
]


def config() -> Any:
    checks = [
        {"name": name, "url": "http://127.0.0.1:9/", "interval": "15s", "timeout": "5s"}
        for name in ("stripe", "mapbox", "search")
    ]
    return make_config(checks=checks, rules=RULES)


def seed(hours: int) -> dict[str, int]:
    """stripe: 3% down, fast; mapbox: healthy but slow (avg about 400 ms, p95 above 900 ms,
    one 3 s probe); search: healthy and fast."""
    cfg = config()
    with session_scope() as session:
        sync_checks(session, cfg, now=T0)
        ids = dict(session.execute(select(Check.name, Check.id)).all())
    rng = random.Random(11)
    rows: list[dict[str, Any]] = []
    for n in range(hours * 240):
        slot = T0 + timedelta(seconds=15 * n)
        for name, check_id in ids.items():
            status = "down" if name == "stripe" and rng.random() < 0.03 else "up"
            if name == "mapbox":
                latency = rng.choice([150.0, 200.0, 250.0, 300.0, 350.0, 1200.0])
                if n == hours * 240 - 100:
                    latency = 3000.0
            else:
                latency = rng.uniform(20, 80)
            rows.append(
                {
                    "check_id": check_id,
                    "slot": slot,
                    "observed_at": slot,
                    "status": status,
                    "latency_ms": latency,
                }
            )
    with session_scope() as session:
        for i in range(0, len(rows), 5000):
            session.execute(insert(Outcome).values(rows[i : i + 5000]))
    return ids


def test_rule_verdicts_from_rollups_and_the_raw_edge_equal_those_from_raw_outcomes(
    clean_db: str,
) -> None:
    seed(hours=26)
    now = T0 + timedelta(hours=26) - timedelta(seconds=7)
    # The rollup is 20 minutes behind: the raw edge of every window is wide.
    for _ in range(5):
        with session_scope() as session:
            run_rollup(session, RETENTION, now=now - timedelta(minutes=18))
    cfg = config()
    verdicts: dict[tuple[str, str], bool] = {}
    with session_scope() as session:
        for rule in cfg.rules:
            raw = outcome_samples(session, rule, now)
            rolled = outcome_samples(session, rule, now, RETENTION)
            assert [s.subject for s in rolled] == [s.subject for s in raw]
            for r, s in zip(raw, rolled, strict=True):
                assert s.samples == r.samples, (rule.name, r.subject)
                assert r.value is not None and s.value is not None
                tolerance = 0.05 if rule.aggregate.startswith("p") else 1e-9
                assert abs(s.value - r.value) <= tolerance * abs(r.value), (rule.name, r.subject)
                verdict = _COMPARE[rule.op](s.value, rule.threshold)
                assert verdict == _COMPARE[rule.op](r.value, rule.threshold), (rule.name, s)
                verdicts[(rule.name, r.subject)] = verdict
    # The data was built so each rule has both verdicts to agree on.
    assert {k for k, v in verdicts.items() if v} == {
        ("uptime-critical", "stripe"),
        ("error-rate-2h", "stripe"),
        ("slow-average-3h", "mapbox"),
        ("slow-p95-6h", "mapbox"),
        ("slowest-probe-90m", "mapbox"),
    }

    # And the engine itself, reading rollups through the config, opens exactly those.
    with session_scope() as session:
        evaluate_rules(session, cfg.model_copy(update={"retention": RETENTION}), now=now)
        opened = set(session.execute(select(Incident.rule, Incident.subject)).all())
    assert opened == {k for k, v in verdicts.items() if v}
