"""Platform insight tasks: KPIs, Web Vitals, funnels, feedback, experiments."""

from __future__ import annotations
