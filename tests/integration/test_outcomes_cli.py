"""`eventops outcomes ...` in process on real Postgres, on the real clock: yesterday's outcomes
that waited in the default partition move into their day, get rolled up, and yesterday's
performance review prints as Markdown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert

from core.clock import utcnow
from core.schedule import sync_checks
from models.db import session_scope
from models.tables import Check, Outcome
from tests.conftest import make_config
from workers.cli import main


def run(*args: str) -> Any:
    result = CliRunner().invoke(main, ["outcomes", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_status_maintain_rollup_and_review_from_the_command_line(clean_db: str) -> None:
    yesterday = datetime.combine(utcnow().date() - timedelta(days=1), time(), UTC)
    checks = [{"name": "stripe", "url": "http://127.0.0.1:9/", "interval": "1m", "timeout": "5s"}]
    with session_scope() as session:
        sync_checks(session, make_config(checks=checks), now=yesterday)
        check_id = session.scalars(select(Check.id)).one()
        session.execute(text("DROP TABLE IF EXISTS outcomes_p" + f"{yesterday:%Y%m%d}"))
        session.execute(
            insert(Outcome).values(
                [
                    {
                        "check_id": check_id,
                        "slot": yesterday + timedelta(minutes=m),
                        "observed_at": yesterday + timedelta(minutes=m),
                        "status": "down" if m % 100 == 0 else "up",
                        "latency_ms": 50.0 + m % 10,
                    }
                    for m in range(24 * 60)
                ]
            )
        )

    before = json.loads(run("status", "--json"))
    assert before["default_partition_rows"] == 1440
    assert before["minute_watermark"] is None

    maintained = json.loads(run("maintain"))
    assert maintained["created"] == [f"outcomes_p{yesterday:%Y%m%d}"]
    assert maintained["moved_from_default"] == 1440
    for _ in range(4):
        run("rollup")

    after = json.loads(run("status", "--json"))
    assert after["default_partition_rows"] == 0
    assert after["days_ahead"] >= 7
    assert after["late_minutes_waiting"] == 0
    assert after["rollup_lag_s"] < 600
    assert "minute watermark" in run("status")

    report = run("review", "--period", "daily")
    assert report.startswith(f"# Daily performance review: {yesterday:%Y-%m-%d}")
    assert "| `stripe` | 1440 | 15 | 98.96% |" in report
    assert "- `stripe`: uptime 98.96% below 99.90%" in report
