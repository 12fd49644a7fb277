"""Bring a database to the newest schema with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's ini interpolation treats % specially; URLs may contain %-escapes.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    command.upgrade(alembic_config(url), "head")


def not_an_outcome_partition(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """The daily partitions of `outcomes` are made by core/partitions.py, not by models:
    autogenerate and `alembic check` must not call them extra tables."""
    return not (
        type_ == "table"
        and reflected
        and name is not None
        and (name.startswith("outcomes_p") or name == "outcomes_default")
    )
