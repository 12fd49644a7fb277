"""Log ingestion, error patterns, capacity planning and the weekly report."""

from __future__ import annotations
