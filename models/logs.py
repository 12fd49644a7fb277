"""Ingested platform logs, read offsets, error patterns, capacity history and reports."""

from __future__ import annotations

from models.base import Base  # noqa: F401
