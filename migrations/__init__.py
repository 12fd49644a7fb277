"""Alembic migrations of eventops' own database."""
