"""Infrastructure metrics, database maintenance reports and eventops' own heartbeats."""

from __future__ import annotations

from models.base import Base  # noqa: F401
