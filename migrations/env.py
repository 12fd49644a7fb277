"""Alembic environment: migrates the database the caller names (or EVENTOPS_DATABASE_URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from core.migrate import not_an_outcome_partition
from models.tables import Base

config = context.config


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from workers.settings import get_settings

    url = get_settings().database_url
    if not url:
        raise SystemExit("EVENTOPS_DATABASE_URL is not set")
    return url


def run_migrations_online() -> None:
    # hide_parameters: a failed statement's error never carries its values (models/db.py).
    engine = create_engine(database_url(), poolclass=pool.NullPool, hide_parameters=True)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            include_object=not_an_outcome_partition,
        )
        with context.begin_transaction():
            # Two processes migrating at once (two compose replicas) wait for each other.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7341001)")
            context.run_migrations()
    engine.dispose()


run_migrations_online()
