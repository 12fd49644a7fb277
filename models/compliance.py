"""Audit trail and compliance: the hash-chained audit log, privacy requests, scans."""

from __future__ import annotations

from models.base import Base  # noqa: F401
