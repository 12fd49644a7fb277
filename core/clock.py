"""The one clock: timezone-aware UTC, injectable so tests never sleep through a delay."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
