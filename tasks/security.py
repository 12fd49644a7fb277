"""Security detection tasks (core/security holds the logic)."""

from __future__ import annotations
