"""Platform insight: KPI history, Web Vitals, funnels, feedback, experiments (docs/insight.md)."""

from __future__ import annotations

from models.base import Base  # noqa: F401
