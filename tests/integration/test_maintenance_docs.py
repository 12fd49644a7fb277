"""Every alert rule on an infrastructure or self-monitoring figure has a runbook entry."""

from __future__ import annotations

from pathlib import Path

from models.config import load_config

# The metrics core/maintenance writes (and memory_usage, which the seed's rule reads).
PREFIXES = ("pg_", "redis_", "queue_", "worker_", "beat_", "sweeper_", "outbox_", "selfmon_")
HOST_METRICS = ("cpu_usage", "memory_usage", "disk_usage")


def test_every_maintenance_rule_has_a_runbook_entry(repo_root: Path) -> None:
    config = load_config(repo_root / "config" / "eventops.yaml")
    runbooks = (repo_root / "docs" / "operations.md").read_text()
    ours = [
        r.name for r in config.rules if r.metric.startswith(PREFIXES) or r.metric in HOST_METRICS
    ]
    assert len(ours) >= 17
    assert [name for name in ours if f"`{name}`" not in runbooks] == []
