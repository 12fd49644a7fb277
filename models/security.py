"""Security detection: findings, bans and their evidence (docs/security.md)."""

from __future__ import annotations

from models.base import Base  # noqa: F401
