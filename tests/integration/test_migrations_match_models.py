"""The migrations and the SQLAlchemy models describe the same schema.

Seven migrations were written by hand beside their models; a column in one and not the other
would fail only at run time, on the path that touches it. Alembic's comparison finds such
drift. Expression indexes (a COLLATE "C" sort key) are left out: Alembic cannot compare them.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from core.migrate import not_an_outcome_partition
from models.tables import Base


def _expression_indexes(diffs: list[Any]) -> set[str]:
    """Names of indexes the models define with an expression (reflected as plain columns,
    so Alembic reports each as removed and added again)."""
    return {
        diff[1].name
        for diff in diffs
        if isinstance(diff, tuple)
        and diff[0] == "add_index"
        and any(not hasattr(e, "name") for e in diff[1].expressions)
    }


def test_the_migrated_schema_is_the_models_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_object": not_an_outcome_partition}
            )
            diffs = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    skip = _expression_indexes(diffs)
    drift = [
        d
        for d in diffs
        if not (
            isinstance(d, tuple) and d[0] in ("add_index", "remove_index") and d[1].name in skip
        )
    ]
    assert drift == []
