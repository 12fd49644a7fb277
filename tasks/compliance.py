"""Audit-trail and compliance tasks (core/compliance holds the logic)."""

from __future__ import annotations
