"""A Postgres server's health as metrics the rule engine reads (subject: the target's name,
`platform-db` or `eventops-db`; per table or index `<target>:<schema>.<name>`).

Server-wide figures (connections, locks, replication, wraparound) are the server's, seen
from the target's database; cache hit ratio, sizes and dead tuples are the database's own.
Every query reads statistics views only: nothing here takes a lock a user could wait on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

WRAPAROUND_LIMIT = 2**31  # transaction IDs before wraparound; Postgres stops ~3M short
# Seconds to wait for a monitored database to accept a connection (the task has 50 s for all).
CONNECT_TIMEOUT_S = 10

Sample = tuple[str, str, float, datetime]


def _one(db: psycopg.Connection[Any], sql: str) -> Any:
    row = db.execute(sql).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def postgres_samples(
    db: psycopg.Connection[Any], target: str, now: datetime, top_n: int = 10
) -> list[Sample]:
    """Every figure for one database, as (name, subject, value, at).

    - `pg_connections`, `pg_max_connections`, `pg_connections_ratio` (of max_connections).
    - `pg_oldest_xact_age_s`: the oldest open transaction of any client (0 when none).
    - `pg_locks`, `pg_lock_waits` (lock requests not granted), `pg_longest_lock_wait_s`.
    - `pg_replicas` (streaming replicas connected); per replica (`<target>:replica:<name>`)
      `pg_replication_lag_s` and `pg_replication_lag_bytes`. On a standby, its own
      `pg_replication_lag_s` (time since the last replayed transaction). A primary without
      replicas writes no lag at all: absence, not a reassuring zero.
    - `pg_cache_hit_ratio` of this database (blocks found in shared buffers).
    - `pg_database_bytes`; the `top_n` largest tables' `pg_table_bytes` (with indexes and
      TOAST) and indexes' `pg_index_bytes`.
    - per table with the most dead tuples (`top_n`): `pg_dead_tuples`, `pg_dead_tuple_ratio`.
    - `pg_xid_age` (oldest datfrozenxid on the server), `pg_wraparound_headroom` (1 - age /
      2^31: 1 is fresh, 0 is wraparound), `pg_xid_age_over_freeze_max` (age over
      autovacuum_freeze_max_age: above 1 means anti-wraparound autovacuum is overdue).
    """
    samples: list[Sample] = []

    def add(name: str, value: Any, subject: str = target) -> None:
        if value is not None:
            samples.append((name, subject, float(value), now))

    connections, max_connections = _one(
        db,
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
        " current_setting('max_connections')::int",
    )
    add("pg_connections", connections)
    add("pg_max_connections", max_connections)
    add("pg_connections_ratio", connections / max_connections)
    add(
        "pg_oldest_xact_age_s",
        _one(
            db,
            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)"
            " FROM pg_stat_activity WHERE xact_start IS NOT NULL"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        ),
    )
    locks, waits = _one(db, "SELECT count(*), count(*) FILTER (WHERE NOT granted) FROM pg_locks")
    add("pg_locks", locks)
    add("pg_lock_waits", waits)
    add(
        "pg_longest_lock_wait_s",
        _one(
            db,
            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - state_change)), 0)"
            " FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        ),
    )
    if _one(db, "SELECT pg_is_in_recovery()"):
        add(
            "pg_replication_lag_s",
            _one(
                db,
                "SELECT extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())",
            ),
        )
    else:
        replicas = db.execute(
            # A caught-up, idle standby shows NULL lag times (0 here); a WAL receiver such as
            # pg_receivewal replays nothing, so its flush position is what counts; a standby
            # that has not sent its first feedback yet has only the position sent to it.
            "SELECT coalesce(nullif(application_name, ''), client_addr::text, pid::text),"
            " extract(epoch FROM coalesce(replay_lag, flush_lag, write_lag, '0')),"
            " pg_wal_lsn_diff(pg_current_wal_lsn(),"
            "  coalesce(replay_lsn, flush_lsn, write_lsn, sent_lsn))"
            " FROM pg_stat_replication"
        ).fetchall()
        add("pg_replicas", len(replicas))
        for name, lag_s, lag_bytes in replicas:
            add("pg_replication_lag_s", lag_s, f"{target}:replica:{name}")
            add("pg_replication_lag_bytes", lag_bytes, f"{target}:replica:{name}")
    hit, read = _one(
        db,
        "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()",
    )
    if hit + read > 0:
        add("pg_cache_hit_ratio", hit / (hit + read))
    add("pg_database_bytes", _one(db, "SELECT pg_database_size(current_database())"))
    for schema, name, size in db.execute(
        "SELECT schemaname, relname, pg_total_relation_size(relid) FROM pg_stat_user_tables"
        " ORDER BY 3 DESC, 1, 2 LIMIT %s",
        (top_n,),
    ):
        add("pg_table_bytes", size, f"{target}:{schema}.{name}")
    for schema, name, size in db.execute(
        "SELECT schemaname, indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes"
        " ORDER BY 3 DESC, 1, 2 LIMIT %s",
        (top_n,),
    ):
        add("pg_index_bytes", size, f"{target}:{schema}.{name}")
    for schema, name, dead, live in db.execute(
        "SELECT schemaname, relname, n_dead_tup, n_live_tup FROM pg_stat_user_tables"
        " WHERE n_dead_tup > 0 ORDER BY n_dead_tup DESC, 1, 2 LIMIT %s",
        (top_n,),
    ):
        add("pg_dead_tuples", dead, f"{target}:{schema}.{name}")
        add("pg_dead_tuple_ratio", dead / (dead + live), f"{target}:{schema}.{name}")
    xid_age, freeze_max = _one(
        db,
        "SELECT max(age(datfrozenxid)), current_setting('autovacuum_freeze_max_age')::bigint"
        " FROM pg_database",
    )
    add("pg_xid_age", xid_age)
    add("pg_wraparound_headroom", 1 - xid_age / WRAPAROUND_LIMIT)
    add("pg_xid_age_over_freeze_max", xid_age / freeze_max)
    return samples


def collect_postgres(
    targets: dict[str, str],
    now: datetime,
    top_n: int = 10,
    connect_timeout: int = CONNECT_TIMEOUT_S,
) -> tuple[list[Sample], dict[str, str]]:
    """Samples from every target (name -> SQLAlchemy or libpq URL), plus `pg_reachable`
    (1/0) per target; a target that cannot be read is data (0 and its error), not a crash.

    Connecting is bounded: a host that drops packets (a firewall change, a partition) would
    otherwise hold the connect past the task's time limit, which kills the whole run, so
    `pg_reachable` 0 was never written and the unreachable alert never fired."""
    from core.backups.tools import Conn

    samples: list[Sample] = []
    errors: dict[str, str] = {}
    for target, url in targets.items():
        try:
            with Conn.from_url(url).connect(connect_timeout=connect_timeout) as db:
                db.execute("SET statement_timeout = '30s'")
                samples += postgres_samples(db, target, now, top_n)
            samples.append(("pg_reachable", target, 1.0, now))
        except psycopg.Error as error:
            errors[target] = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
            samples.append(("pg_reachable", target, 0.0, now))
    return samples, errors
