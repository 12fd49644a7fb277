"""The demo platform database on real Postgres: schema, deterministic data, planted attacks."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

from core.backups.tools import Conn
from demo import platform_db
from demo.platform_db import SCHEMA, TABLES, apply_schema, drop_schema, generate, row_counts

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
DAYS = 30
SCALE = 0.1

# Every timestamp column that records when something happened on the platform.
TIME_COLUMNS = {
    "users": ["created_at"],
    "vendors": ["created_at", "verified_at"],
    "events": ["created_at"],
    "bookings": ["created_at"],
    "payments": ["created_at"],
    "reviews": ["created_at"],
    "auth_events": ["at"],
    "api_requests": ["at"],
    "data_access_log": ["at"],
}
FOREIGN_KEYS = {
    ("vendors", "users"),
    ("events", "users"),
    ("bookings", "events"),
    ("bookings", "vendors"),
    ("payments", "bookings"),
    ("reviews", "bookings"),
    ("auth_events", "users"),
    ("api_requests", "users"),
    ("data_access_log", "users"),
}
# Children whose rows must point at a parent: (table, column, parent table).
REFERENCES = [
    ("vendors", "user_id", "users"),
    ("events", "user_id", "users"),
    ("bookings", "event_id", "events"),
    ("bookings", "vendor_id", "vendors"),
    ("payments", "booking_id", "bookings"),
    ("reviews", "booking_id", "bookings"),
    ("auth_events", "user_id", "users"),
    ("api_requests", "user_id", "users"),
    ("data_access_log", "actor_user_id", "users"),
    ("data_access_log", "subject_user_id", "users"),
]
# RFC 5737 documentation ranges: where the generator's attackers (and only they) come from.
ATTACKER_NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")


@pytest.fixture(scope="module")
def make_db(postgres_server_url: str) -> Iterator[Callable[[], Conn]]:
    """Scratch databases on the test server, dropped when the module is done."""
    server = Conn.from_url(postgres_server_url)
    names: list[str] = []

    def create() -> Conn:
        name = f"eventops_platform_{uuid.uuid4().hex[:10]}"
        with server.connect() as db:
            db.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return server.with_db(name)

    yield create
    with server.connect() as db:
        for name in names:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def platform(make_db: Callable[[], Conn]) -> tuple[Conn, dict[str, int]]:
    """One database generated once, for the tests that only read."""
    conn = make_db()
    apply_schema(conn)
    apply_schema(conn)
    return conn, generate(conn, scale=SCALE, seed=7, days=DAYS, now=NOW)


def rows(conn: Conn, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.connect() as db:
        return [tuple(row) for row in db.execute(query, params).fetchall()]


def value(conn: Conn, query: str, params: Any = None) -> Any:
    return rows(conn, query, params)[0][0]


def checksums(conn: Conn) -> dict[str, str]:
    return {
        table: value(
            conn,
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} AS t",
        )
        for table in TABLES
    }


def test_schema_applies_twice_and_keeps_its_shape(platform: tuple[Conn, dict[str, int]]) -> None:
    conn, _ = platform
    constraints = "SELECT count(*) FROM pg_constraint WHERE conrelid::regclass::text = ANY(%s)"
    indexes = "SELECT count(*) FROM pg_indexes WHERE tablename = ANY(%s)"
    before = value(conn, constraints, (list(TABLES),)), value(conn, indexes, (list(TABLES),))
    apply_schema(conn)
    after = value(conn, constraints, (list(TABLES),)), value(conn, indexes, (list(TABLES),))
    assert before == after
    present = {
        r[0]
        for r in rows(
            conn, "SELECT tablename FROM pg_tables WHERE tablename = ANY(%s)", (list(TABLES),)
        )
    }
    assert present == set(TABLES)
    # The indexes dropped for the bulk load are all back.
    named = set(re.findall(r"CREATE INDEX IF NOT EXISTS (\w+)", SCHEMA))
    have = {
        r[0]
        for r in rows(
            conn, "SELECT indexname FROM pg_indexes WHERE tablename = ANY(%s)", (list(TABLES),)
        )
    }
    assert named <= have


def test_counts_match_the_tables_and_the_scale(platform: tuple[Conn, dict[str, int]]) -> None:
    conn, counts = platform
    assert list(counts) == list(TABLES)
    assert counts == row_counts(conn)
    assert counts["users"] == 200
    assert counts["vendors"] == 30
    assert counts["events"] == 300
    assert counts["bookings"] == 500
    assert all(counts[t] > 0 for t in TABLES)
    roles = dict(rows(conn, "SELECT role, count(*) FROM users GROUP BY role"))
    assert roles["vendor"] == counts["vendors"] and roles["admin"] >= 1
    assert value(conn, "SELECT count(*) FROM users WHERE email NOT LIKE '%@example.test'") == 0


def test_same_seed_same_rows_other_seed_other_rows(make_db: Callable[[], Conn]) -> None:
    conn = make_db()
    generate(conn, scale=0.05, seed=7, now=NOW)
    first = checksums(conn)
    drop_schema(conn)
    apply_schema(conn)
    generate(conn, scale=0.05, seed=7, now=NOW)
    assert checksums(conn) == first
    generate(conn, scale=0.05, seed=8, now=NOW)
    other = checksums(conn)
    assert all(other[t] != first[t] for t in TABLES)


def test_foreign_keys_exist_hold_and_are_enforced(platform: tuple[Conn, dict[str, int]]) -> None:
    conn, _ = platform
    found = rows(
        conn,
        "SELECT conrelid::regclass::text, confrelid::regclass::text, convalidated"
        " FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text = ANY(%s)",
        (list(TABLES),),
    )
    assert {(child, parent) for child, parent, _ in found} == FOREIGN_KEYS
    assert all(valid for _, _, valid in found)
    for table, column, parent in REFERENCES:
        orphans = value(
            conn,
            f"SELECT count(*) FROM {table} AS c LEFT JOIN {parent} AS p ON p.id = c.{column}"
            f" WHERE c.{column} IS NOT NULL AND p.id IS NULL",
        )
        assert orphans == 0, f"{table}.{column}"
    with conn.connect() as db, pytest.raises(psycopg.errors.ForeignKeyViolation):
        db.execute(
            "INSERT INTO bookings (event_id, vendor_id, status, amount_cents, created_at)"
            " VALUES (-1, 1, 'pending', 100, now())"
        )


def test_rows_fall_within_the_window(platform: tuple[Conn, dict[str, int]]) -> None:
    conn, _ = platform
    start = NOW - timedelta(days=DAYS)
    for table, columns in TIME_COLUMNS.items():
        for column in columns:
            low, high = rows(conn, f"SELECT min({column}), max({column}) FROM {table}")[0]
            assert start <= low and high <= NOW, f"{table}.{column}: {low} .. {high}"
    # Nothing happens before the thing it depends on.
    for query in (
        "SELECT count(*) FROM bookings b JOIN events e ON e.id = b.event_id"
        " WHERE b.created_at < e.created_at",
        "SELECT count(*) FROM bookings b JOIN vendors v ON v.id = b.vendor_id"
        " WHERE b.created_at < v.created_at",
        "SELECT count(*) FROM vendors v JOIN users u ON u.id = v.user_id"
        " WHERE v.created_at < u.created_at OR v.verified_at < v.created_at",
        "SELECT count(*) FROM payments p JOIN bookings b ON b.id = p.booking_id"
        " WHERE p.created_at < b.created_at",
        "SELECT count(*) FROM reviews r JOIN bookings b ON b.id = r.booking_id"
        " WHERE r.created_at < b.created_at OR b.status <> 'completed'",
        "SELECT count(*) FROM auth_events a JOIN users u ON u.id = a.user_id"
        " WHERE a.at < u.created_at",
        "SELECT count(*) FROM api_requests a JOIN users u ON u.id = a.user_id"
        " WHERE a.at < u.created_at",
    ):
        assert value(conn, query) == 0, query
    # Log ids follow time, so a reader can page through a log by id.
    for table in ("auth_events", "api_requests", "data_access_log"):
        disorder = value(
            conn,
            f"SELECT count(*) FROM (SELECT at < lag(at) OVER (ORDER BY id) AS back FROM {table})"
            " AS x WHERE back",
        )
        assert disorder == 0, table


def test_planted_attacks_are_there_and_honest_traffic_is_not_one(
    platform: tuple[Conn, dict[str, int]],
) -> None:
    conn, _ = platform
    # 20 or more failed logins from one IP within 10 minutes: the brute force and the
    # credential stuffing, and nobody else (not even the office NAT).
    bursts = rows(
        conn,
        """
        SELECT host(ip), max(n) FROM (
            SELECT ip, count(*) OVER (
                PARTITION BY ip ORDER BY at
                RANGE BETWEEN interval '10 minutes' PRECEDING AND CURRENT ROW
            ) AS n
            FROM auth_events WHERE kind = 'login_failure'
        ) AS w GROUP BY ip HAVING max(n) >= 20
        """,
    )
    flagged = {ip for ip, _ in bursts}
    assert platform_db.BRUTE_FORCE_IP in flagged
    assert flagged <= {platform_db.BRUTE_FORCE_IP, platform_db.STUFFING_IP}
    # Brute force: one account; stuffing: many accounts.
    accounts = dict(
        rows(
            conn,
            "SELECT host(ip), count(DISTINCT email) FROM auth_events"
            " WHERE ip IN (%s::inet, %s::inet) GROUP BY ip",
            (platform_db.BRUTE_FORCE_IP, platform_db.STUFFING_IP),
        )
    )
    assert accounts[platform_db.BRUTE_FORCE_IP] == 1
    assert accounts[platform_db.STUFFING_IP] >= 20
    # The shared NAT carries several honest users, and some of their logins fail.
    nat_users = value(
        conn,
        "SELECT count(DISTINCT user_id) FROM auth_events WHERE ip = %s::inet",
        (platform_db.SHARED_NAT_IP,),
    )
    assert nat_users >= 3

    # One admin exports many other users' data, at 3 a.m. NZ time.
    exporters = rows(
        conn,
        """
        SELECT u.role, count(*), count(DISTINCT d.subject_user_id),
               min(extract(hour FROM d.at AT TIME ZONE 'Pacific/Auckland'))
        FROM data_access_log AS d JOIN users AS u ON u.id = d.actor_user_id
        WHERE d.action = 'export' AND d.subject_user_id <> d.actor_user_id
        GROUP BY u.id, u.role HAVING count(*) >= 50
        """,
    )
    assert len(exporters) == 1
    role, exports, subjects, _ = exporters[0]
    assert role == "admin" and exports >= 50 and subjects >= 50
    night = value(
        conn,
        "SELECT count(*) FROM data_access_log WHERE action = 'export' AND purpose = 'reporting'"
        " AND extract(hour FROM at AT TIME ZONE 'Pacific/Auckland') = 3",
    )
    assert night >= 50

    # Some 5xx, among them a burst of 503s within five minutes.
    assert value(conn, "SELECT count(*) FROM api_requests WHERE status >= 500") > 20
    burst = value(
        conn,
        """
        SELECT max(n) FROM (
            SELECT count(*) OVER (ORDER BY at RANGE BETWEEN interval '5 minutes' PRECEDING
                                  AND CURRENT ROW) AS n
            FROM api_requests WHERE status = 503
        ) AS w
        """,
    )
    assert burst >= 20
    # Injection probes in request paths, all from the documentation ranges.
    probes = rows(
        conn,
        "SELECT host(ip) FROM api_requests"
        " WHERE path ILIKE '%union%select%' OR path ILIKE '%<script>%' OR path LIKE '%../%'",
    )
    assert probes
    assert all(
        value(conn, "SELECT %s::inet <<= ANY(%s::inet[])", (ip, list(ATTACKER_NETS)))
        for (ip,) in probes
    )


def test_double_scale_doubles_rows(make_db: Callable[[], Conn]) -> None:
    conn = make_db()
    small = generate(conn, scale=0.5, seed=7, now=NOW)
    large = generate(conn, scale=1.0, seed=7, now=NOW)
    for table in TABLES:
        ratio = large[table] / small[table]
        assert 1.8 <= ratio <= 2.2, f"{table}: {small[table]} -> {large[table]}"
    assert 1900 <= large["users"] <= 2100 and 250 <= large["vendors"] <= 350
    assert 4500 <= large["bookings"] <= 5500
    assert 18000 <= large["api_requests"] <= 22000
    assert 4500 <= large["auth_events"] <= 5500


def test_generate_checks_its_arguments(make_db: Callable[[], Conn]) -> None:
    conn = make_db()
    with pytest.raises(ValueError):
        generate(conn, scale=0)
    with pytest.raises(ValueError):
        generate(conn, days=0)
    with pytest.raises(ValueError):
        generate(conn, now=datetime(2026, 11, 27))


def test_command_line_resets_generates_and_reports(
    make_db: Callable[[], Conn],
    postgres_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn = make_db()
    url = make_url(postgres_server_url).set(database=conn.dbname)
    monkeypatch.setenv("EVENTOPS_PLATFORM_DATABASE_URL", url.render_as_string(hide_password=False))
    assert platform_db.main(["--scale", "0.05", "--seed", "3", "--days", "7"]) == 0
    assert platform_db.main(["--scale", "0.05", "--reset"]) == 0
    out = capsys.readouterr().out
    for table in TABLES:
        assert table in out
    assert "database size" in out
    assert row_counts(conn)["users"] == 100
    assert platform_db.size_bytes(conn) > 1_000_000
    monkeypatch.delenv("EVENTOPS_PLATFORM_DATABASE_URL")
    with pytest.raises(SystemExit):
        platform_db.main([])
