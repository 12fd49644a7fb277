"""Index optimisation report: unused, duplicate and overlapping, invalid and bloated
indexes, and foreign keys without an index; each finding with the SQL that fixes it.

Only the catalog and the statistics views are read. Fixes are never run from here; see
core.maintenance.actions for the safe ones (REINDEX CONCURRENTLY, ANALYZE), which run only
with `maintenance.apply_fixes` and inside the quiet window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class Finding:
    kind: str  # unused | duplicate | overlapping | invalid | bloated | fk-without-index | ...
    target: str  # platform-db | eventops-db
    table: str  # schema.table
    name: str  # the index (or the constraint, for a foreign key)
    detail: str
    fix: str  # SQL that fixes it
    safe: bool = False  # may run unattended (REINDEX CONCURRENTLY, ANALYZE, VACUUM)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ident(schema: str, name: str) -> str:
    """`schema.name`, each part quoted only when it must be (as Postgres prints them)."""
    return f"{quote(schema)}.{quote(name)}"


def quote(name: str) -> str:
    return sql.Identifier(name).as_string(None) if not _plain(name) else name


def _plain(name: str) -> bool:
    return name.isidentifier() and name == name.lower() and name.isascii()


_INDEXES = """
SELECT n.nspname, t.relname, i.relname, x.indexrelid, x.indrelid,
       x.indisunique, x.indisprimary, x.indisvalid, x.indisexclusion,
       x.indkey::text, x.indclass::text, coalesce(pg_get_expr(x.indexprs, x.indrelid), ''),
       coalesce(pg_get_expr(x.indpred, x.indrelid), ''), am.amname,
       coalesce(s.idx_scan, 0), pg_relation_size(x.indexrelid),
       EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid
               AND c.contype IN ('p', 'u', 'x')),
       pg_get_indexdef(x.indexrelid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = x.indexrelid
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1, 2, 3
"""


@dataclass(frozen=True)
class _Index:
    schema: str
    table: str
    name: str
    oid: int
    table_oid: int
    unique: bool
    primary: bool
    valid: bool
    exclusion: bool
    keys: tuple[str, ...]
    classes: tuple[str, ...]
    expressions: str
    predicate: str
    method: str
    scans: int
    size: int
    backs_constraint: bool
    definition: str

    @property
    def qualified(self) -> str:
        return _ident(self.schema, self.name)

    @property
    def table_qualified(self) -> str:
        return _ident(self.schema, self.table)

    @property
    def enforces(self) -> bool:
        """Dropping it would drop a guarantee (primary key, unique, exclusion)."""
        return self.unique or self.primary or self.exclusion or self.backs_constraint


def _indexes(db: psycopg.Connection[Any]) -> list[_Index]:
    found = []
    for row in db.execute(_INDEXES):
        values: list[Any] = [*row[:9], tuple(row[9].split()), tuple(row[10].split()), *row[11:]]
        found.append(_Index(*values))
    return found


def unused_indexes(target: str, indexes: list[_Index], stats_since: str | None) -> list[Finding]:
    since = f" since statistics were reset ({stats_since})" if stats_since else ""
    return [
        Finding(
            "unused",
            target,
            ix.table_qualified,
            ix.qualified,
            f"never scanned{since}; {ix.size} bytes, and every write to "
            f"{ix.table_qualified} updates it",
            f"DROP INDEX CONCURRENTLY {ix.qualified};",
        )
        for ix in indexes
        if ix.valid and ix.scans == 0 and not ix.enforces
    ]


def duplicate_indexes(target: str, indexes: list[_Index]) -> list[Finding]:
    """Same table, method, columns, operator classes, expressions and predicate: one is
    enough. Overlapping: a plain index whose columns are the leading columns of another
    (same method, expressions and predicate) answers nothing the wider one cannot."""
    findings: list[Finding] = []
    reported: set[int] = set()
    by_table: dict[int, list[_Index]] = {}
    for ix in indexes:
        if ix.valid:
            by_table.setdefault(ix.table_oid, []).append(ix)
    for group in by_table.values():
        for a in group:
            for b in group:
                if a.oid == b.oid or a.oid in reported:
                    continue
                if (a.method, a.expressions, a.predicate) != (b.method, b.expressions, b.predicate):
                    continue
                if (a.keys, a.classes) == (b.keys, b.classes):
                    # Keep the one that enforces something, else the older (lower oid).
                    drop, keep = (
                        (a, b) if (not a.enforces, a.oid) > (not b.enforces, b.oid) else (b, a)
                    )
                    if drop.oid != a.oid or drop.enforces:
                        continue  # reported when the loop reaches the other side
                    reported.add(drop.oid)
                    findings.append(
                        Finding(
                            "duplicate",
                            target,
                            a.table_qualified,
                            drop.qualified,
                            f"same definition as {keep.qualified} ({keep.definition})",
                            f"DROP INDEX CONCURRENTLY {drop.qualified};",
                        )
                    )
                elif (
                    a.method == "btree"
                    and not a.enforces
                    and len(a.keys) < len(b.keys)
                    and b.keys[: len(a.keys)] == a.keys
                    and b.classes[: len(a.classes)] == a.classes
                ):
                    reported.add(a.oid)
                    findings.append(
                        Finding(
                            "overlapping",
                            target,
                            a.table_qualified,
                            a.qualified,
                            f"its columns lead {b.qualified} ({b.definition}), which serves the "
                            "same lookups",
                            f"DROP INDEX CONCURRENTLY {a.qualified};",
                        )
                    )
    return findings


def invalid_indexes(target: str, indexes: list[_Index]) -> list[Finding]:
    """A failed CREATE INDEX CONCURRENTLY leaves an INVALID index: never used by queries,
    still updated by every write (and a unique one still rejects rows)."""
    findings = []
    for ix in indexes:
        if ix.valid:
            continue
        detail = "INVALID (a CREATE or REINDEX CONCURRENTLY failed); unused by queries, still "
        detail += "maintained on every write"
        if ix.unique:
            detail += "; it is UNIQUE: if the build failed on duplicate rows, remove them first"
        create = ix.definition.replace(" INDEX ", " INDEX CONCURRENTLY ", 1)
        if ix.unique:
            # REINDEX would fail on the same duplicates and leave a second invalid index.
            fix = f"-- remove the duplicate rows, then:\nDROP INDEX CONCURRENTLY {ix.qualified};"
            fix += f"\n{create};"
        else:
            fix = f"REINDEX INDEX CONCURRENTLY {ix.qualified};"
        findings.append(
            Finding(
                "invalid",
                target,
                ix.table_qualified,
                ix.qualified,
                detail,
                fix,
                safe=not ix.unique,
            )
        )
    return findings


# A b-tree's expected size from its row count and the average width of its key columns
# (pg_stats), the estimate the usual bloat queries make: 8 bytes of tuple header and a
# 4-byte line pointer per entry, pages 90 % full (the default fillfactor) after 24 bytes of
# page header and 16 of b-tree special space. Expression indexes have no column widths
# and are skipped; a table never analysed has no widths either.
_BTREE_ESTIMATE = """
SELECT x.indexrelid, i.relpages::bigint, greatest(i.reltuples, 0)::float8,
       current_setting('block_size')::int,
       (SELECT sum(coalesce(st.avg_width, 0)) FROM unnest(x.indkey) AS k(attnum)
        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
        LEFT JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = t.relname
             AND st.attname = a.attname),
       (SELECT count(*) FROM unnest(x.indkey) AS k(attnum)
        JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
        JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = t.relname
             AND st.attname = a.attname),
       x.indnatts
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = i.relam
WHERE am.amname = 'btree' AND x.indexprs IS NULL AND x.indisvalid
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
"""


def estimated_bloat(relpages: int, reltuples: float, block: int, key_width: float) -> int:
    """Bytes an index holds beyond what its entries need (0 if none)."""
    entry = 8 + 8 * -(-int(key_width) // 8) + 4  # header + MAXALIGNed key + line pointer
    usable = (block - 24 - 16) * 0.9
    expected_pages = -(-int(reltuples * entry) // int(usable)) + 1  # + the metapage
    return max(0, (relpages - expected_pages) * block)


def _pgstattuple_schema(db: psycopg.Connection[Any]) -> str | None:
    row = db.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgstattuple'"
    ).fetchone()
    return None if row is None else str(row[0])


def bloated_indexes(
    db: psycopg.Connection[Any],
    target: str,
    indexes: list[_Index],
    ratio: float,
    min_bytes: int,
) -> list[Finding]:
    """B-trees with much empty space. Measured with pgstattuple's `pgstatindex` (leaf
    density against the 90 % a fresh b-tree has) where that extension is installed (it
    reads the whole index), else estimated from the statistics (see _BTREE_ESTIMATE)."""
    by_oid = {ix.oid: ix for ix in indexes}
    pgstattuple = _pgstattuple_schema(db)
    findings = []
    for oid, pages, tuples, block, width, known, natts in db.execute(_BTREE_ESTIMATE).fetchall():
        ix = by_oid.get(oid)
        if ix is None or pages < 10:
            continue  # too small to matter
        size = pages * block
        if pgstattuple is not None:
            density, leaf_pages = db.execute(
                f"SELECT avg_leaf_density, leaf_pages FROM {pgstattuple}.pgstatindex(%s::regclass)",
                (oid,),
            ).fetchone() or (None, None)
            if density is None or leaf_pages is None or density != density:  # NaN: empty
                continue
            waste = int(max(0.0, 1 - float(density) / 90.0) * int(leaf_pages) * block)
            method = f"measured by pgstatindex: leaves {float(density):.0f} % full"
        elif known < natts:
            continue  # no statistics for every key column
        else:
            waste = estimated_bloat(pages, tuples, block, float(width or 0))
            method = "estimated from the table statistics"
        if waste >= min_bytes and waste / size >= ratio:
            findings.append(
                Finding(
                    "bloated",
                    target,
                    ix.table_qualified,
                    ix.qualified,
                    f"about {waste} of its {size} bytes ({waste / size:.0%}) are empty space "
                    f"({method})",
                    f"REINDEX INDEX CONCURRENTLY {ix.qualified};",
                    safe=True,
                )
            )
    return findings


_FOREIGN_KEYS = """
SELECT n.nspname, t.relname, c.conname, c.conkey::int[],
       (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY
            AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum),
       EXISTS (
           SELECT 1 FROM pg_index x
           WHERE x.indrelid = c.conrelid AND x.indisvalid AND x.indpred IS NULL
             AND (x.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
             AND (x.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey
       )
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE c.contype = 'f' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2, 3
"""


def foreign_keys_without_index(db: psycopg.Connection[Any], target: str) -> list[Finding]:
    """A foreign key whose columns do not lead any index: every delete or key update on
    the referenced table scans this one (and locks while it does)."""
    findings = []
    for schema, table, constraint, _, columns, indexed in db.execute(_FOREIGN_KEYS):
        if indexed:
            continue
        cols = ", ".join(quote(c) for c in columns)
        findings.append(
            Finding(
                "fk-without-index",
                target,
                _ident(schema, table),
                constraint,
                f"foreign key ({cols}) has no index leading with its columns",
                f"CREATE INDEX CONCURRENTLY ON {_ident(schema, table)} ({cols});",
            )
        )
    return findings


def index_report(
    db: psycopg.Connection[Any],
    target: str,
    *,
    bloat_ratio: float = 0.5,
    min_bloat_bytes: int = 10 * 1024 * 1024,
) -> list[Finding]:
    """Every index finding for the database `db` is connected to."""
    indexes = _indexes(db)
    stats_reset = db.execute(
        "SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    redundant = duplicate_indexes(target, indexes)
    already = {f.name for f in redundant}
    unused = [
        f
        for f in unused_indexes(target, indexes, stats_reset[0] if stats_reset else None)
        if f.name not in already  # one DROP per index: the duplicate finding says why
    ]
    return [
        *invalid_indexes(target, indexes),
        *redundant,
        *unused,
        *bloated_indexes(db, target, indexes, bloat_ratio, min_bloat_bytes),
        *foreign_keys_without_index(db, target),
    ]
