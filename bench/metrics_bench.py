"""/metrics at scale: how long one scrape takes with N checks (default 100,000).

    .venv/bin/python -m bench.metrics_bench [--checks 100000] [--limit 1000] [--scrapes 5]

Uses the Postgres named by EVENTOPS_BENCH_DATABASE_URL (a server URL; a scratch database is
created on it and dropped at the end), else 127.0.0.1:5432 as user postgres, and the Redis
named by EVENTOPS_BENCH_BROKER_URL (default redis://127.0.0.1:6379/15; only read). Inserts
N checks (1 in 100 down, in 50 groups): the scrape
reads checks, incidents, queues and task hashes exactly as in production, through
web.metrics.render. Prints the median and worst scrape time and the exposition's size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import psycopg
from sqlalchemy import make_url, text

from core.migrate import upgrade
from models import db
from web.metrics import render
from workers.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checks", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=5)
    options = parser.parse_args()

    server = os.environ.get(
        "EVENTOPS_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    broker = os.environ.get("EVENTOPS_BENCH_BROKER_URL", "redis://127.0.0.1:6379/15")
    name = f"eventops_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(server)
    libpq = {
        "host": admin.host,
        "port": admin.port or 5432,
        "user": admin.username,
        "dbname": admin.database,
        "autocommit": True,
    }
    if admin.password:
        libpq["password"] = admin.password
    with psycopg.connect(**libpq) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        db.configure(url)
        with db.get_engine().begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO checks (name, kind, url, method, expected_status, interval_s,
                        timeout_s, max_body_bytes, alert_threshold, recovery_threshold,
                        severity, enabled, group_name, depends_on, category, next_due_at,
                        dispatch_attempts, status, consecutive_failures,
                        consecutive_successes, last_latency_ms, last_checked_at)
                    SELECT 'check-' || lpad(n::text, 6, '0'), 'http', 'http://127.0.0.1:9/',
                        'GET', '[200]', 60, 5, 1024, 1, 2, 'critical', true,
                        'group-' || (n % 50), '[]', 'availability', now(), 0,
                        CASE WHEN n % 100 = 0 THEN 'down' ELSE 'up' END, 0, 0,
                        random() * 500, now()
                    FROM generate_series(1, :n) AS n
                    """
                ),
                {"n": options.checks},
            )
            conn.execute(text("ANALYZE checks"))
        settings = Settings(broker_url=broker, metrics_check_series_limit=options.limit)
        render(settings)  # warm the pool and the plans
        times = []
        for _ in range(options.scrapes):
            started = time.perf_counter()
            body = render(settings)
            times.append(time.perf_counter() - started)
        lines = body.count(b"\n")
        print(
            f"{options.checks} checks, series limit {options.limit}: scrape median "
            f"{statistics.median(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms, "
            f"{len(body) / 1024:.0f} KiB, {lines} lines"
        )
    finally:
        db.get_engine().dispose()
        with psycopg.connect(**libpq) as conn:  # type: ignore[arg-type]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
