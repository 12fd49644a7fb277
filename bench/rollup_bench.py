"""Rollup benchmark: what the per-minute rollup costs at scale, and what reading rollups saves
the 24 h uptime rule.

    .venv/bin/python -m bench.rollup_bench [--checks 1000] [--hours 24]

Outcomes are written in slot order, as the pipeline writes them.

Uses the Postgres named by EVENTOPS_BENCH_DATABASE_URL (a server URL; a scratch database is
created on it and dropped at the end), else 127.0.0.1:5432 as user postgres. Writes one
outcome per check per minute for `--hours` into the partitioned `outcomes` table (1000
checks for 24 h is 1.44 million rows, a day at the scale the issue names), then times:

- the catch-up rollup of the whole period (what a first run or a long outage costs),
- one steady-state minute of rollup (what the every-minute task costs),
- the 24 h uptime rule's samples read from raw outcomes and from rollups + the raw edge.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import make_url, text

from core.migrate import upgrade
from core.partitions import maintain
from core.rollups import MINUTE, floor_minute, run_rollup
from core.rules import outcome_samples
from models import db
from models.config import RuleConfig
from models.config_retention import OutcomeRetentionConfig

RETENTION = OutcomeRetentionConfig()
UPTIME_RULE = RuleConfig.model_validate(
    {
        "name": "uptime-critical",
        "metric": "uptime",
        "window": "24h",
        "op": "<",
        "threshold": 0.99,
        "severity": "critical",
    }
)


@contextmanager
def scratch_database() -> Iterator[str]:
    server = make_url(
        os.environ.get(
            "EVENTOPS_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/postgres"
        )
    )
    name = f"eventops_rollup_bench_{uuid.uuid4().hex[:8]}"
    admin: dict[str, object] = {
        "host": server.host,
        "user": server.username,
        "dbname": server.database or "postgres",
    }
    if server.port:
        admin["port"] = server.port
    with psycopg.connect(**admin, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        if url_configured():
            db.get_engine().dispose()
        with psycopg.connect(**admin, autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url_configured() -> bool:
    try:
        db.get_engine()
    except Exception:
        return False
    return True


def timed(label: str, results: dict[str, float], fn: object) -> object:
    start = time.perf_counter()
    value = fn()  # type: ignore[operator]
    results[label] = time.perf_counter() - start
    print(f"{label}: {results[label]:.2f} s")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--hours", type=int, default=24)
    args = parser.parse_args()
    start = datetime(2026, 11, 26, tzinfo=UTC)
    end = start + timedelta(hours=args.hours)
    results: dict[str, float] = {}
    with scratch_database() as url:
        upgrade(url)
        db.configure(url)
        engine = db.get_engine()
        with db.session_scope() as session:
            maintain(session, RETENTION, now=start)
            session.execute(
                text(
                    "INSERT INTO checks (name, kind, url, method, expected_status, interval_s, "
                    "timeout_s, max_body_bytes, alert_threshold, recovery_threshold, severity, "
                    "enabled, group_name, depends_on, category, next_due_at, dispatch_attempts, "
                    "status, consecutive_failures, consecutive_successes) "
                    "SELECT 'check-' || n, 'http', 'http://x/', 'GET', '[200]', 60, 5, 1000, 1, "
                    "2, 'critical', true, 'g', '[]', 'availability', now(), 0, 'up', 0, 0 "
                    "FROM generate_series(1, :n) n"
                ),
                {"n": args.checks},
            )

        def load() -> None:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO outcomes (check_id, slot, observed_at, status, latency_ms) "
                        "SELECT c, t, t, CASE WHEN random() < 0.01 THEN 'down' ELSE 'up' END, "
                        "20 + random() * 400 FROM generate_series(CAST(:start AS timestamptz), "
                        "CAST(:end AS timestamptz) - interval '1 minute', interval '1 minute') t, "
                        "generate_series(1, :n) c ORDER BY t, c"
                    ),
                    {"n": args.checks, "start": start, "end": end},
                )
                conn.execute(text("ANALYZE outcomes"))

        timed(f"write {args.checks * args.hours * 60} outcomes", results, load)
        now = end + timedelta(minutes=RETENTION.settle_minutes)

        def catch_up() -> None:
            for _ in range(args.hours):
                with db.session_scope() as session:
                    if run_rollup(session, RETENTION, now=now)["minutes"] == 0:
                        return

        # Leave the last minute unrolled, then time it alone: the steady-state run.
        with db.session_scope() as session:
            session.execute(
                text(
                    "INSERT INTO rollup_progress (resolution, watermark, updated_at) "
                    "VALUES ('minute', :mark, now())"
                ),
                {"mark": start},
            )

        def steady_minute() -> None:
            with db.session_scope() as session:
                run_rollup(session, RETENTION, now=now)

        with db.session_scope() as session:
            session.execute(text("DELETE FROM rollup_progress"))
        timed("catch-up rollup of the whole period", results, catch_up)
        with db.session_scope() as session:
            session.execute(
                text("UPDATE rollup_progress SET watermark = :mark WHERE resolution = 'minute'"),
                {"mark": floor_minute(end) - MINUTE},
            )
        timed("one steady-state minute of rollup", results, steady_minute)

        def raw() -> None:
            with db.session_scope() as session:
                outcome_samples(session, UPTIME_RULE, end)

        def rolled() -> None:
            with db.session_scope() as session:
                outcome_samples(session, UPTIME_RULE, end, RETENTION)

        raw()  # warm the cache for both
        timed("24 h uptime rule from raw outcomes", results, raw)
        timed("24 h uptime rule from rollups + raw edge", results, rolled)
    print(f"\n{platform.node()} {os.cpu_count()} cores, {args.checks} checks, {args.hours} h")


if __name__ == "__main__":
    main()
