"""P3: outcome rows per second through the pipeline's write path, against a raw COPY.

    .venv/bin/python -m bench.write_path_bench [--checks 1000] [--rows 50000] [--batch 100]

A scratch database on the local Postgres (EVENTOPS_BENCH_DATABASE_URL to name another
server). The same rows (one outcome per check per second, 1 in 50 down) go:
1. through core.pipeline.record_outcomes in batches of --batch (a probes.run_batch task's
   write: insert with ON CONFLICT, lock the checks, advance their state, commit), then
2. after TRUNCATE, through one psycopg COPY ... FROM STDIN (the ceiling), and
3. after TRUNCATE, through one COPY per batch of --batch rows, each committed (what COPY
   does when it has to commit as often as the write path, which commits every task).
Prints the rates and the write path's ratio to each (goal >= 0.5).
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

import psycopg
from sqlalchemy import text

from bench import harness
from core.clock import utcnow
from core.pipeline import insert_outcomes, record_outcomes
from core.probing import ProbeResult, Reason
from models import db
from models.config import parse_config

COLUMNS = (
    "check_id",
    "slot",
    "observed_at",
    "status",
    "latency_ms",
    "http_status",
    "reason",
    "detail",
)


def insert_checks(count: int) -> list[int]:
    with db.get_engine().begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO checks (name, kind, url, method, expected_status, interval_s,
                    timeout_s, max_body_bytes, alert_threshold, recovery_threshold,
                    severity, enabled, group_name, depends_on, category, next_due_at,
                    dispatch_attempts, status, consecutive_failures, consecutive_successes)
                SELECT 'check-' || lpad(n::text, 6, '0'), 'http', 'http://127.0.0.1:9/',
                    'GET', '[200]', 60, 5, 1024, 3, 2, 'critical', true,
                    'group-' || (n % 50), '[]', 'availability', now() + interval '1 day', 0,
                    'up', 0, 0
                FROM generate_series(1, :n) AS n
                """
            ),
            {"n": count},
        )
        return [int(r[0]) for r in conn.execute(text("SELECT id FROM checks ORDER BY id"))]


def make_rows(ids: list[int], rows: int) -> list[ProbeResult]:
    now = utcnow().replace(microsecond=0)
    rounds = -(-rows // len(ids))
    results = []
    for r in range(rounds):
        slot = now - timedelta(seconds=rounds - r)
        for n, check_id in enumerate(ids):
            down = (n + r) % 50 == 0
            results.append(
                ProbeResult(
                    check_id=check_id,
                    slot=slot,
                    observed_at=slot + timedelta(milliseconds=40),
                    status="down" if down else "up",
                    latency_ms=12.5 + n % 7,
                    http_status=500 if down else 200,
                    reason=Reason.BAD_STATUS if down else None,
                    detail="HTTP 500" if down else None,
                )
            )
    return results[:rows]


def copy_rows(url: str, rows: list[ProbeResult], batch: int) -> float:
    """Rows per second through COPY ... FROM STDIN, committing every `batch` rows, into an
    emptied outcomes table."""
    with psycopg.connect(**harness.libpq(url)) as conn:
        conn.execute("TRUNCATE outcomes")
    with psycopg.connect(**{**harness.libpq(url), "autocommit": False}) as conn:
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            with (
                conn.cursor() as cursor,
                cursor.copy(f"COPY outcomes ({', '.join(COLUMNS)}) FROM STDIN") as copy,
            ):
                for r in rows[start : start + batch]:
                    copy.write_row([getattr(r, column) for column in COLUMNS])
            conn.commit()
        return len(rows) / (time.perf_counter() - started)


def insert_only_rows(url: str, rows: list[ProbeResult], batch: int) -> float:
    """Rows per second through the write path's outcome INSERT alone (no check state), one
    committed transaction per batch, into an emptied outcomes table: where the write path's
    time goes, next to COPY."""
    with psycopg.connect(**harness.libpq(url)) as conn:
        conn.execute("TRUNCATE outcomes")
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        with db.get_engine().begin() as connection:
            insert_outcomes(connection, rows[start : start + batch])
    return len(rows) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100, help="rows per record_outcomes call")
    options = parser.parse_args(argv)
    print(harness.machine())
    config = parse_config(
        {"platform_url": "http://127.0.0.1:9", "network": {"allow_internal": ["127.0.0.0/8"]}}
    )
    with harness.scratch_database() as url:
        db.configure(url)
        ids = insert_checks(options.checks)
        rows = make_rows(ids, options.rows)

        started = time.perf_counter()
        for start in range(0, len(rows), options.batch):
            with db.session_scope() as session:
                record_outcomes(session, rows[start : start + options.batch], config)
        pipeline_s = time.perf_counter() - started
        pipeline_rate = len(rows) / pipeline_s
        pipeline_load = harness.load()

        with psycopg.connect(**harness.libpq(url)) as conn:
            stored = conn.execute("SELECT count(*) FROM outcomes").fetchone()
            assert stored and stored[0] == len(rows), stored
        copy_rate = copy_rows(url, rows, len(rows))
        copy_load = harness.load()
        batched_copy_rate = copy_rows(url, rows, options.batch)
        insert_only_rate = insert_only_rows(url, rows, options.batch)
        print(
            f"record_outcomes, batches of {options.batch}: {len(rows):,} rows in "
            f"{pipeline_s:.2f} s = {pipeline_rate:,.0f} rows/s (load {pipeline_load})"
        )
        print(f"one COPY: {copy_rate:,.0f} rows/s (load {copy_load})")
        print(
            f"one COPY per {options.batch} rows, each committed: {batched_copy_rate:,.0f} rows/s "
            f"(load {harness.load()})"
        )
        print(
            f"the outcome INSERT alone, batches of {options.batch}: {insert_only_rate:,.0f} rows/s"
            f" = {insert_only_rate / copy_rate:.2f} of one COPY"
        )
        print(f"ratio pipeline / one COPY: {pipeline_rate / copy_rate:.2f} (goal >= 0.5)")
        print(
            f"ratio pipeline / COPY in the same batches: "
            f"{pipeline_rate / batched_copy_rate:.2f} (goal >= 0.5)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
