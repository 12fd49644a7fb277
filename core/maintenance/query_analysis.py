"""Weekly query analysis from pg_stat_statements: top queries by total and mean time, calls,
and regressions against the previous week's snapshot.

pg_stat_statements counts since its last reset, so each week stores the cumulative figures
(`calls`, `total_ms`) and the week's own mean (the difference from the previous snapshot,
or the cumulative mean when there is none or the counters were reset). A regression is a
query whose week mean grew by `regression_ratio` or more over the previous week's, with at
least MIN_CALLS calls this week.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.maintenance.indexes import Finding
from models.maintenance import QuerySnapshot

MIN_CALLS = 10
ENABLE_FIX = (
    "-- pg_stat_statements must be preloaded: in postgresql.conf (or ALTER SYSTEM)\n"
    "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';\n"
    "-- restart Postgres, then in this database:\n"
    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;\n"
    "-- Supabase: enabled by default; else Database > Extensions > pg_stat_statements."
)


@dataclass(frozen=True)
class QueryStat:
    queryid: int
    query: str
    calls: int
    total_ms: float
    rows: int


def statements_status(db: psycopg.Connection[Any]) -> str | None:
    """None when pg_stat_statements can be read here, else why not (a sentence)."""
    installed = db.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension"
        " WHERE extname = 'pg_stat_statements'"
    ).fetchone()
    loaded = db.execute(
        "SELECT 'pg_stat_statements' = ANY(string_to_array("
        "replace(current_setting('shared_preload_libraries'), ' ', ''), ','))"
    ).fetchone()
    if not (loaded and loaded[0]):
        return "pg_stat_statements is not enabled: it is not in shared_preload_libraries"
    if installed is None:
        return "pg_stat_statements is loaded but the extension is not created in this database"
    return None


def read_statements(db: psycopg.Connection[Any], limit: int = 500) -> list[QueryStat]:
    """This database's statements, busiest first (total time)."""
    schema = db.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension"
        " WHERE extname = 'pg_stat_statements'"
    ).fetchone()
    assert schema is not None
    view = f"{schema[0]}.pg_stat_statements"
    rows = db.execute(
        f"SELECT queryid, query, sum(calls)::bigint, sum(total_exec_time), sum(rows)::bigint"
        f" FROM {view} s JOIN pg_database d ON d.oid = s.dbid"
        " WHERE d.datname = current_database() AND queryid IS NOT NULL"
        " GROUP BY queryid, query ORDER BY 4 DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [QueryStat(int(q), text, int(c), float(t), int(r)) for q, text, c, t, r in rows]


def store_week(
    session: Session,
    target: str,
    week: date,
    stats: list[QueryStat],
    now: datetime,
) -> dict[int, tuple[float, int]]:
    """Store this week's snapshot (a rerun the same week replaces it) and return each
    query's (week mean ms, week calls)."""
    previous = {
        s.queryid: s
        for s in session.scalars(
            select(QuerySnapshot).where(
                QuerySnapshot.target == target,
                QuerySnapshot.week
                == select(QuerySnapshot.week)
                .where(QuerySnapshot.target == target, QuerySnapshot.week < week)
                .order_by(QuerySnapshot.week.desc())
                .limit(1)
                .scalar_subquery(),
            )
        )
    }
    weekly: dict[int, tuple[float, int]] = {}
    rows = []
    for stat in stats:
        before = previous.get(stat.queryid)
        calls, total = stat.calls, stat.total_ms
        if before is not None and stat.calls >= before.calls:
            calls, total = stat.calls - before.calls, stat.total_ms - before.total_ms
        mean = total / calls if calls else 0.0
        weekly[stat.queryid] = (mean, calls)
        rows.append(
            {
                "target": target,
                "week": week,
                "queryid": stat.queryid,
                "query": stat.query[:4000],
                "calls": stat.calls,
                "total_ms": stat.total_ms,
                "mean_ms": mean,
                "rows": stat.rows,
                "taken_at": now,
            }
        )
    if rows:
        statement = insert(QuerySnapshot)
        session.execute(
            statement.on_conflict_do_update(
                constraint="uq_query_snapshots_key",
                set_={
                    k: statement.excluded[k]
                    for k in ("query", "calls", "total_ms", "mean_ms", "rows", "taken_at")
                },
            ),
            rows,
        )
    return weekly


def explain_fix(query: str) -> str:
    """The SQL to investigate a query. EXPLAIN ANALYZE runs the statement, so it is offered
    for reads only: for an INSERT, UPDATE or DELETE it would make the change. pg_stat_statements
    replaces constants with $1, $2, ...: those need real values first."""
    words = query.lstrip("( \n\t").split(None, 1)
    first = words[0].upper() if words else ""
    writes = re.search(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", query, re.IGNORECASE)
    read_only = first in ("SELECT", "VALUES", "TABLE") or (first == "WITH" and not writes)
    lines = []
    if re.search(r"\$\d", query):
        lines.append("-- replace $1, $2, ... with real values first")
    if read_only:
        lines.append(f"EXPLAIN (ANALYZE, BUFFERS) {query};")
    else:
        lines.append("-- EXPLAIN ANALYZE would run this statement and make its change: plan only")
        lines.append(f"EXPLAIN {query};")
    return "\n".join(lines)


def query_report(
    session: Session,
    db: psycopg.Connection[Any] | None,
    target: str,
    week: date,
    now: datetime,
    *,
    top_n: int = 10,
    regression_ratio: float = 1.5,
    why_not: str | None = None,
) -> list[Finding]:
    """Findings for one database: the top queries, the regressions, or why there are none.
    `db` None (or `why_not`) reports that pg_stat_statements is not available."""
    reason = why_not or (statements_status(db) if db is not None else "no connection")
    if reason is not None or db is None:
        return [
            Finding(
                "pg-stat-statements-missing",
                target,
                "",
                "pg_stat_statements",
                f"{reason}; query analysis is not possible until it is enabled",
                ENABLE_FIX,
            )
        ]
    previous_means = {
        s.queryid: s.mean_ms
        for s in session.scalars(
            select(QuerySnapshot).where(
                QuerySnapshot.target == target,
                QuerySnapshot.week
                == select(QuerySnapshot.week)
                .where(QuerySnapshot.target == target, QuerySnapshot.week < week)
                .order_by(QuerySnapshot.week.desc())
                .limit(1)
                .scalar_subquery(),
            )
        )
    }
    stats = read_statements(db)
    weekly = store_week(session, target, week, stats, now)
    # The whole statement for the SQL to run; the first 300 characters for reading.
    full = {s.queryid: " ".join(s.query.split()) for s in stats}
    text = {queryid: query[:300] for queryid, query in full.items()}
    findings: list[Finding] = []
    by_total = sorted(stats, key=lambda s: s.total_ms, reverse=True)[:top_n]
    for rank, stat in enumerate(by_total, 1):
        findings.append(
            Finding(
                "top-total-time",
                target,
                "",
                str(stat.queryid),
                f"#{rank}: {stat.total_ms:.0f} ms in {stat.calls} calls "
                f"({stat.total_ms / max(stat.calls, 1):.2f} ms each): {text[stat.queryid]}",
                explain_fix(full[stat.queryid]),
            )
        )
    by_mean = sorted(
        (s for s in stats if s.calls),
        key=lambda s: s.total_ms / s.calls,
        reverse=True,
    )[:top_n]
    for rank, stat in enumerate(by_mean, 1):
        findings.append(
            Finding(
                "top-mean-time",
                target,
                "",
                str(stat.queryid),
                f"#{rank}: {stat.total_ms / stat.calls:.2f} ms per call, {stat.calls} calls: "
                f"{text[stat.queryid]}",
                explain_fix(full[stat.queryid]),
            )
        )
    for queryid, (mean, calls) in weekly.items():
        before = previous_means.get(queryid)
        if before and calls >= MIN_CALLS and mean >= before * regression_ratio:
            findings.append(
                Finding(
                    "regression",
                    target,
                    "",
                    str(queryid),
                    f"mean {mean:.2f} ms this week against {before:.2f} ms the week before "
                    f"(x{mean / before:.1f}, {calls} calls): {text[queryid]}",
                    explain_fix(full[queryid]),
                )
            )
    return findings
