"""Failed-login detection benchmark: the Postgres jail query against fail2ban's own
`fail2ban-regex` over the same auth events, in one run.

    .venv/bin/python -m bench.security_bench [--events 10000000] [--days 7]

Uses the Postgres named by EVENTOPS_BENCH_DATABASE_URL (a server URL; a scratch database is
created on it and dropped at the end), else 127.0.0.1:5432 as user postgres. Installs the
Debian package `fail2ban` with apt-get when `fail2ban-regex` is missing (needs root).

1. Generates N auth events in a `security_events` table with set-based SQL
   (generate_series): honest logins from a 4-million-address pool (10 % failures), attackers
   (20 failures 5 s apart) and near misses (4 failures in 8 minutes, under maxretry), then
   builds the table's indexes.
2. Writes the same events, in time order, as a log file (one line per event).
3. Times the detector's query (core/security/failed_logins.py, fail2ban's plain
   maxretry-within-findtime, first crossing per IP) over all N events.
4. Times `fail2ban-regex` over the log file (its matches, with their times, on stdout) and
   applies the same jail (maxretry within findtime) to its matches.
5. Checks both found the same offending IPs and prints the ratio of the times.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine

from core.backups.tools import Conn
from core.security.failed_logins import ip_crossings_sql
from models.base import Base
from models.security import SecurityEvent

MAXRETRY = 5
FINDTIME = timedelta(minutes=10)
START = datetime(2026, 11, 1, tzinfo=UTC)
FAILREGEX = r"auth failure account=\S+ ip=<ADDR>"
ROW = re.compile(r"^\['([^']+)',\s*([0-9.]+),")


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


def ensure_fail2ban() -> str:
    found = shutil.which("fail2ban-regex")
    if found:
        return found
    print("fail2ban-regex is missing: apt-get install fail2ban", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "fail2ban"], check=True, env=env
    )
    found = shutil.which("fail2ban-regex")
    if not found:
        sys.exit("fail2ban-regex is still missing after apt-get install fail2ban")
    return found


def attackers_for(events: int) -> int:
    return max(10, events // 20_000)


def generate(engine: Engine, events: int, days: int) -> dict[str, int]:
    """Fill security_events set-based; indexes are built after the load."""
    table = Base.metadata.tables[SecurityEvent.__tablename__]
    attackers = near = attackers_for(events)
    honest = events - attackers * 20 - near * 4
    span = days * 86400
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(
            text("ALTER TABLE security_events DROP CONSTRAINT uq_security_events_source_key")
        )
        for index in table.indexes:
            conn.execute(text(f"DROP INDEX {index.name}"))
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(text("SELECT setseed(0.42)"))
        conn.execute(
            text(
                f"""
                INSERT INTO security_events (stream, source, source_key, at, ip, account, kind,
                                             user_agent)
                -- Honest users: a large pool of addresses, one in ten logins mistyped.
                SELECT 'auth', 'bench', 'h' || g,
                       :start + make_interval(secs => random() * {span}),
                       inet '100.64.0.0' + floor(random() * 4194304)::int8,
                       'user' || floor(random() * 500000)::int8 || '@example.test',
                       CASE WHEN random() < 0.1 THEN 'failure' ELSE 'success' END,
                       'Mozilla/5.0'
                FROM generate_series(1, {honest}) AS g
                UNION ALL
                -- Attackers (RFC 2544 range): 20 guesses 5 s apart, each at its own moment.
                SELECT 'auth', 'bench', 'a' || a || '.' || k,
                       t.at + make_interval(secs => 5 * k),
                       inet '198.18.0.0' + a, 'victim' || a || '@example.test', 'failure',
                       'python-requests/2.31.0'
                FROM generate_series(1, {attackers}) AS a
                CROSS JOIN LATERAL (
                    SELECT :start + make_interval(secs => random() * {span - 3600} + a * 0)
                        AS at
                ) AS t
                CROSS JOIN generate_series(0, 19) AS k
                UNION ALL
                -- Near misses: four failures in eight minutes, one short of maxretry.
                SELECT 'auth', 'bench', 'n' || a || '.' || k,
                       t.at + make_interval(secs => 160 * k),
                       inet '198.19.128.0' + a, 'forgetful' || a || '@example.test', 'failure',
                       'Mozilla/5.0'
                FROM generate_series(1, {near}) AS a
                CROSS JOIN LATERAL (
                    SELECT :start + make_interval(secs => random() * {span - 3600} + a * 0)
                        AS at
                ) AS t
                CROSS JOIN generate_series(0, 3) AS k
                """
            ),
            {"start": START},
        )
    with engine.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE security_events ADD CONSTRAINT uq_security_events_source_key"
                " UNIQUE (source, source_key)"
            )
        )
        for index in table.indexes:
            index.create(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE security_events"))
    return {"honest": honest, "attackers": attackers, "near_misses": near}


def write_log(server: Conn, path: Path) -> int:
    """The events as a log file, time-ordered, one line each (as a web node would write)."""
    lines = 0
    with (
        server.connect() as db,
        path.open("wb") as out,
        db.cursor().copy(
            """
            COPY (
                SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' auth '
                       || kind || ' account=' || account || ' ip=' || host(ip)
                       || ' ua="' || user_agent || '"'
                FROM security_events ORDER BY at, id
            ) TO STDOUT
            """
        ) as copy,
    ):
        for chunk in copy:
            out.write(chunk)
            lines += bytes(chunk).count(b"\n")
    return lines


def postgres_offenders(engine: Engine, days: int) -> tuple[set[str], float, str]:
    params: dict[str, Any] = {
        "lo": START - FINDTIME - timedelta(days=1),
        "since": START - timedelta(days=1),
        "until": START + timedelta(days=days + 1),
        "findtime": FINDTIME,
        "maxretry": MAXRETRY,
        "ignore": [],
    }
    sql = ip_crossings_sql(forgive=False, first_only=True)
    with engine.connect() as conn:
        conn.exec_driver_sql("SET jit = off")
        started = time.perf_counter()
        rows = conn.exec_driver_sql(sql, params).all()
        elapsed = time.perf_counter() - started
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN (COSTS OFF) " + sql, params))
    return {r[0] for r in rows}, elapsed, plan


def jail(matches: list[tuple[str, float]]) -> set[str]:
    """fail2ban's jail on its matches: maxretry failures of one IP within findtime."""
    windows: dict[str, deque[float]] = defaultdict(deque)
    banned: set[str] = set()
    findtime = FINDTIME.total_seconds()
    for ip, at in sorted(matches, key=lambda m: m[1]):
        if ip in banned:
            continue
        window = windows[ip]
        window.append(at)
        while window[0] <= at - findtime:
            window.popleft()
        if len(window) >= MAXRETRY:
            banned.add(ip)
    return banned


def fail2ban_offenders(binary: str, log: Path) -> tuple[set[str], float, float, int]:
    started = time.perf_counter()
    result = subprocess.run(
        [binary, "--timezone", "UTC", "-o", "row", str(log), FAILREGEX],
        check=True,
        capture_output=True,
        text=True,
    )
    regex_s = time.perf_counter() - started
    started = time.perf_counter()
    matches = []
    for line in result.stdout.splitlines():
        if match := ROW.match(line):
            matches.append((match.group(1), float(match.group(2))))
    offenders = jail(matches)
    jail_s = time.perf_counter() - started
    return offenders, regex_s, jail_s, len(matches)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.security_bench", description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000, help="auth events (10M)")
    parser.add_argument("--days", type=int, default=7, help="spread over this many days")
    args = parser.parse_args()
    if args.events < 1000:
        parser.error("--events must be at least 1000")
    server_url = os.environ.get(
        "EVENTOPS_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    binary = ensure_fail2ban()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    name = f"eventops_secbench_{uuid.uuid4().hex[:8]}"
    with scratch_database(server_url, name) as url, tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            started = time.perf_counter()
            mix = generate(engine, args.events, args.days)
            generate_s = time.perf_counter() - started
            print(f"generated {args.events:,} events in {generate_s:.1f} s: {mix}", flush=True)
            log = Path(tmp) / "auth.log"
            started = time.perf_counter()
            lines = write_log(Conn.from_url(url), log)
            print(
                f"wrote {lines:,} log lines ({log.stat().st_size / 1e6:.0f} MB) in "
                f"{time.perf_counter() - started:.1f} s",
                flush=True,
            )
            with engine.connect() as conn:
                pg_version = conn.exec_driver_sql("SHOW server_version").scalar()
            pg_ips, pg_s, plan = postgres_offenders(engine, args.days)
            print(f"postgres: {len(pg_ips)} offending IPs in {pg_s:.2f} s", flush=True)
            f2b_ips, regex_s, jail_s, matched = fail2ban_offenders(binary, log)
            print(
                f"fail2ban-regex: {matched:,} failures matched in {regex_s:.1f} s, "
                f"jail {jail_s:.1f} s: {len(f2b_ips)} offending IPs",
                flush=True,
            )
        finally:
            engine.dispose()
    same = pg_ips == f2b_ips
    expected = {f"198.18.{(a >> 8) & 255}.{a & 255}" for a in range(1, mix["attackers"] + 1)}
    ratio = (regex_s + jail_s) / pg_s
    print()
    print("## Failed-login detection (issue 5): `.venv/bin/python -m bench.security_bench`")
    print()
    print(
        f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} CPUs ({cpu_model()}), PostgreSQL "
        f"{pg_version}, {version}; other work going on the same machine."
    )
    print()
    print("| step | time | note |")
    print("|---|---|---|")
    print(
        f"| generate | {generate_s:.1f} s | {args.events:,} auth events over {args.days} days "
        f"(generate_series), indexes built: {mix['attackers']} attackers, "
        f"{mix['near_misses']} near misses, the rest honest |"
    )
    print(
        f"| Postgres jail query | {pg_s:.2f} s | `ip_crossings_sql(forgive=False)`: "
        f"maxretry {MAXRETRY} within {FINDTIME.total_seconds() / 60:g} min, "
        f"{len(pg_ips)} IPs |"
    )
    print(f"| fail2ban-regex | {regex_s:.1f} s | {matched:,} failures matched in {lines:,} lines |")
    print(f"| jail over its matches | {jail_s:.1f} s | {len(f2b_ips)} IPs |")
    print()
    print(
        f"Same offending IPs: **{'yes' if same else 'NO'}** "
        f"({len(pg_ips & expected)} of {len(expected)} planted attackers, "
        f"{len(pg_ips - expected)} others). Postgres was **{ratio:.0f}x faster** than "
        f"fail2ban-regex plus its jail ({regex_s / pg_s:.0f}x than fail2ban-regex alone)."
    )
    print()
    print("Plan:")
    print()
    print("```")
    print(plan)
    print("```")
    if not same:
        print(f"only Postgres: {sorted(pg_ips - f2b_ips)[:10]}")
        print(f"only fail2ban: {sorted(f2b_ips - pg_ips)[:10]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
