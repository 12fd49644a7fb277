"""Infrastructure metrics, database maintenance and self-monitoring tasks."""

from __future__ import annotations
