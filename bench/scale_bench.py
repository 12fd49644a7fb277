"""P4: with 100,000 configured checks, one dispatch tick and the dashboard's latest-status query.

    .venv/bin/python -m bench.scale_bench [--checks 100000] [--beats 5] [--repeat 20]

A scratch database on the local Postgres and a private Redis. Inserts N checks (interval
60 s, 1 in 100 down, 50 groups) and --beats
outcomes per check (the dashboard's heartbeat strip), then times:
- the dispatch tick `probes.dispatch_due` (claim the due slots with FOR UPDATE SKIP LOCKED
  and send one probes.run_batch message per batch to Redis), run in this process: a steady
  tick (beat ticks every 2 s, so 1/30 of the checks are due) and the worst tick (every check
  due at once, e.g. after an outage; one tick claims at most EVENTOPS_DISPATCH_LIMIT);
- core.dashboard.latest_status_page: the first page, a filtered page (state=down), a
  group's page and a page deep in the name order (median of --repeat runs each).
Goals: a tick < 1 s, the query < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import harness


def timed(action: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(median, worst) milliseconds."""
    action()  # warm the plan and the cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=100_000)
    parser.add_argument("--beats", type=int, default=5, help="outcomes per check")
    parser.add_argument("--repeat", type=int, default=20)
    options = parser.parse_args(argv)
    print(harness.machine())
    with (
        tempfile.TemporaryDirectory(prefix="eventops-bench-") as tmp,
        harness.private_redis(Path(tmp)) as broker,
        harness.scratch_database() as url,
    ):
        config = harness.write_config(Path(tmp) / "eventops.json", [])
        os.environ.update(harness.bench_env(url, broker, config, Path(tmp)))
        # Imported after the environment names the bench's database and broker.
        from core.dashboard import latest_status_page
        from models import db
        from tasks.probes import dispatch_due

        db.configure(url)
        started = time.perf_counter()
        with db.get_engine().begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO checks (name, kind, url, method, expected_status, interval_s,
                        timeout_s, max_body_bytes, alert_threshold, recovery_threshold,
                        severity, enabled, group_name, depends_on, category, next_due_at,
                        dispatch_attempts, status, consecutive_failures,
                        consecutive_successes, last_latency_ms, last_checked_at, last_slot)
                    SELECT 'check-' || lpad(n::text, 6, '0'), 'http', 'http://127.0.0.1:9/',
                        'GET', '[200]', 60, 5, 1024, 1, 2, 'critical', true,
                        'group-' || (n % 50), '[]', 'availability',
                        now(), 0,
                        CASE WHEN n % 100 = 0 THEN 'down' ELSE 'up' END, 0, 0,
                        random() * 500, now(), date_trunc('minute', now())
                    FROM generate_series(1, :n) AS n
                    """
                ),
                {"n": options.checks},
            )
            conn.execute(
                text(
                    """
                    INSERT INTO outcomes (check_id, slot, observed_at, status, latency_ms,
                                          http_status)
                    SELECT c.id, date_trunc('minute', now()) - b * interval '1 minute',
                           date_trunc('minute', now()) - b * interval '1 minute', 'up',
                           12.5, 200
                    FROM checks c, generate_series(0, :beats - 1) AS b
                    """
                ),
                {"beats": options.beats},
            )
        with db.get_engine().begin() as conn:
            conn.execute(text("ANALYZE outcomes"))
        with db.get_engine().begin() as conn:
            # A steady tick: beat ticks every 2 s and intervals are 60 s, so 1 in 30 is due
            # (the others later in the minute; an hour here, so none turns due meanwhile).
            conn.execute(
                text(
                    "UPDATE checks SET next_due_at = CASE WHEN id % 30 = 0 "
                    "THEN now() - interval '1 second' ELSE now() + interval '1 hour' END"
                )
            )
        with db.get_engine().begin() as conn:
            conn.execute(text("ANALYZE checks"))
        print(
            f"{options.checks:,} checks and {options.checks * options.beats:,} outcomes "
            f"inserted in {time.perf_counter() - started:.1f} s"
        )

        started = time.perf_counter()
        steady = dispatch_due.run()
        steady_s = time.perf_counter() - started
        print(
            f"dispatch tick, steady (1/30 due): {steady['claimed']:,} claimed in "
            f"{steady['batches']} batches: {steady_s * 1000:.0f} ms (load {harness.load()})"
        )
        with db.get_engine().begin() as conn:
            conn.execute(
                text(
                    "UPDATE checks SET next_due_at = now() - interval '1 second', "
                    "inflight_slot = NULL, lease_until = NULL"
                )
            )
            conn.execute(text("ANALYZE checks"))
        started = time.perf_counter()
        worst = dispatch_due.run()
        worst_s = time.perf_counter() - started
        print(
            f"dispatch tick, all due: {worst['claimed']:,} claimed in {worst['batches']} "
            f"batches: {worst_s * 1000:.0f} ms (load {harness.load()})"
        )

        def page(**filters: Any) -> Callable[[], Any]:
            def run() -> Any:
                with db.session_scope() as session:
                    return latest_status_page(session, **filters)

            return run

        for label, filters in (
            ("first page", {}),
            ("state=down", {"state": "down"}),
            ("group=group-7", {"group": "group-7"}),
            ("deep page (after check-090000)", {"after": "check-090000"}),
            ("name prefix check-0500", {"name_prefix": "check-0500"}),
        ):
            median, worst_ms = timed(page(**filters), options.repeat)
            print(
                f"latest_status_page {label}, 50 rows: median {median:.1f} ms, "
                f"worst {worst_ms:.1f} ms (load {harness.load()})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
