"""Backup benchmark: dump, verification and restore of a platform database of at least 1 GB.

    .venv/bin/python -m bench.backup_bench [--scale 100] [--gb 1.1]

Uses the Postgres named by EVENTOPS_BENCH_DATABASE_URL (a server URL; a scratch database is
created on it and dropped at the end), else 127.0.0.1:5432 as user postgres. Generates the
demo platform database at the given scale, then times, on the same machine in one run:
an encrypted logical backup (pg_dump -Fc + AES-GCM), its verification (SHA-256 + a full read
with pg_restore -f /dev/null) and a restore test (restore into a scratch database + smoke
queries: the RTO). The goal (issue 4): verification at most 30 % of the dump time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from core.backups.logical import restore_test, run_logical_backup, verify_backup
from core.backups.tools import Conn
from core.migrate import upgrade
from demo import platform_db
from models import db
from models.config import BackupsConfig

KEY = "bench passphrase, not a secret"


@contextmanager
def scratch_database(server_url: str, name: str) -> Iterator[str]:
    admin = Conn.from_url(server_url)
    with admin.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def grow_request_log(source: Conn, target_bytes: int, batch: int = 2_000_000) -> None:
    """Pad the database to size with API request log rows, the platform's biggest table in
    production: set-based inserts, a few seconds per batch."""
    with source.connect() as conn:
        while platform_db.size_bytes(source) < target_bytes:
            conn.execute(
                """
                INSERT INTO api_requests (at, method, path, status, duration_ms, ip, user_agent,
                                          bytes)
                SELECT now() - (g %% 2592000) * interval '1 second',
                       (ARRAY['GET', 'GET', 'GET', 'POST'])[1 + g %% 4],
                       '/api/vendors/' || (g %% 5000) || '/availability',
                       CASE WHEN g %% 97 = 0 THEN 500 ELSE 200 END,
                       10 + g %% 900,
                       ('10.' || (g %% 200) || '.' || (g %% 250) || '.' || (g %% 251))::inet,
                       'Mozilla/5.0 (bench ' || (g %% 31) || ')',
                       500 + g %% 20000
                FROM generate_series(1, %s) AS g
                """,
                (batch,),
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=100.0, help="demo data scale (100: about 1.2 GB)"
    )
    parser.add_argument(
        "--gb",
        type=float,
        default=1.1,
        help="grow the API request log until the database is this big",
    )
    args = parser.parse_args(argv)
    server = os.environ.get(
        "EVENTOPS_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    run_id = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="eventops-bench-"))
    figures: dict[str, Any] = {}
    try:
        with (
            scratch_database(server, f"bench_platform_{run_id}") as platform_url,
            scratch_database(server, f"bench_eventops_{run_id}") as eventops_url,
        ):
            upgrade(eventops_url)
            db.configure(eventops_url)
            source = Conn.from_url(platform_url)
            platform_db.apply_schema(source)
            started = time.monotonic()
            counts = platform_db.generate(source, scale=args.scale)
            grow_request_log(source, int(args.gb * 1e9))
            figures["generate_s"] = time.monotonic() - started
            figures["database_bytes"] = platform_db.size_bytes(source)
            with source.connect() as conn:
                conn.execute("VACUUM ANALYZE")
                row = conn.execute(
                    "SELECT sum(reltuples)::bigint FROM pg_class"
                    " WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
                ).fetchone()
            figures["rows"] = int(row[0]) if row else sum(counts.values())
            config = BackupsConfig(
                key_tables=["public.users", "public.vendors", "public.bookings", "public.payments"]
            )
            slot = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

            started = time.monotonic()
            backup = run_logical_backup(db.session_scope, source, config, work, "hourly", slot, KEY)
            figures["dump_s"] = time.monotonic() - started
            assert backup.get("state") == "succeeded", backup
            figures["dump_bytes"] = backup["size_bytes"]

            started = time.monotonic()
            verified = verify_backup(db.session_scope, backup["backup_id"], KEY)
            figures["verify_s"] = time.monotonic() - started
            assert verified["verify_state"] == "verified", verified

            started = time.monotonic()
            tested = restore_test(
                db.session_scope, source, backup["backup_id"], slot, KEY, config=config
            )
            figures["restore_test_s"] = time.monotonic() - started
            assert tested.get("state") == "passed", tested
            figures["rto_s"] = tested.get("rto_s")
            db.get_engine().dispose()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ratio = figures["verify_s"] / figures["dump_s"]
    print(f"machine        {platform.node()} {platform.machine()}, {os.cpu_count()} cores")
    print(
        f"database       {figures['database_bytes'] / 1e9:.2f} GB, {figures['rows']:,} rows "
        f"(generated in {figures['generate_s']:.0f} s)"
    )
    print(
        f"dump           {figures['dump_s']:.1f} s -> {figures['dump_bytes'] / 1e6:.0f} MB "
        "encrypted archive"
    )
    print(f"verify         {figures['verify_s']:.1f} s  ({ratio:.0%} of the dump; goal <= 30%)")
    print(f"restore test   {figures['restore_test_s']:.1f} s  (measured RTO {figures['rto_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
