"""Tables whose dead tuples or stale statistics call for VACUUM or ANALYZE (thresholds in
`maintenance:`), with the statement that fixes each. Autovacuum normally does this; a
finding here means it is falling behind (or is tuned off) for that table."""

from __future__ import annotations

from typing import Any

import psycopg

from core.maintenance.indexes import Finding, _ident

_TABLES = """
SELECT schemaname, relname, n_live_tup, n_dead_tup, n_mod_since_analyze,
       coalesce(greatest(last_vacuum, last_autovacuum)::text, 'never'),
       coalesce(greatest(last_analyze, last_autoanalyze)::text, 'never')
FROM pg_stat_user_tables
ORDER BY schemaname, relname
"""


def vacuum_report(
    db: psycopg.Connection[Any],
    target: str,
    *,
    dead_ratio: float = 0.2,
    min_dead: int = 10_000,
    stale_ratio: float = 0.2,
    min_modified: int = 1_000,
) -> list[Finding]:
    findings = []
    for schema, table, live, dead, modified, vacuumed, analyzed in db.execute(_TABLES):
        name = _ident(schema, table)
        if dead >= min_dead and dead / max(live + dead, 1) >= dead_ratio:
            findings.append(
                Finding(
                    "needs-vacuum",
                    target,
                    name,
                    name,
                    f"{dead} dead tuples ({dead / (live + dead):.0%} of the table); last "
                    f"vacuum {vacuumed}",
                    f"VACUUM (ANALYZE) {name};",
                    safe=True,
                )
            )
        elif modified >= min_modified and modified / max(live, 1) >= stale_ratio:
            findings.append(
                Finding(
                    "stale-statistics",
                    target,
                    name,
                    name,
                    f"{modified} rows changed since the last analyze ({analyzed}); the "
                    "planner works from old row counts",
                    f"ANALYZE {name};",
                    safe=True,
                )
            )
    return findings
