"""Every periodic tick beat emits: cheap ticks that make workers claim due work from Postgres,
and the scheduled maintenance jobs.

Each entry expires well before its next run: a tick that waited in the queue that long is
stale, and the next one does the same work. Cron times are UTC (02:30 UTC is 15:30 in
Auckland, the platform's quiet afternoon, and 14:30 UTC is 03:30 NZ, its quietest hour).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from celery.schedules import crontab
from celery.schedules import schedule as interval_schedule

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S

DISPATCH_EVERY_S = 2.0
SWEEP_EVERY_S = 5.0

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "dispatch-due-checks": {
        "task": "probes.dispatch_due",
        "schedule": DISPATCH_EVERY_S,
        "options": {"queue": "pipeline", "expires": DISPATCH_EVERY_S * 5},
    },
    "sweep-escalations": {
        "task": "escalations.sweep",
        "schedule": SWEEP_EVERY_S,
        "options": {"queue": "escalations", "expires": SWEEP_EVERY_S * 3},
    },
    "evaluate-rules": {
        "task": "rules.evaluate",
        "schedule": 30.0,
        "options": {"queue": "pipeline", "expires": 90.0},
    },
    # Backups (docs/backups.md): an hourly dump meets the 1 h RPO; the daily one is kept longer.
    "backup-hourly": {
        "task": "backups.dump",
        "schedule": crontab(minute=5),
        "kwargs": {"kind": "hourly"},
        "options": {"queue": "slow", "expires": HOUR_S / 2},
    },
    "backup-daily": {
        "task": "backups.dump",
        "schedule": crontab(hour=14, minute=30),
        "kwargs": {"kind": "daily"},
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    "base-backup-daily": {
        "task": "backups.base",
        "schedule": crontab(hour=14, minute=45),
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    # Verifies every new backup within the hour (the seed asks for daily verification).
    "verify-backups": {
        "task": "backups.verify",
        "schedule": crontab(minute=35),
        "options": {"queue": "slow", "expires": HOUR_S / 2},
    },
    "backup-files-and-config": {
        "task": "backups.files",
        "schedule": crontab(hour=15, minute=0),
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    "backup-retention": {
        "task": "backups.retention",
        "schedule": crontab(hour=16, minute=0),
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    "restore-test-weekly": {
        "task": "backups.restore_test",
        "schedule": crontab(day_of_week="sun", hour=15, minute=30),
        "options": {"queue": "slow", "expires": DAY_S},
    },
    "disaster-recovery-drill-monthly": {
        "task": "backups.drill",
        "schedule": crontab(day_of_month=1, hour=16, minute=30),
        "options": {"queue": "slow", "expires": DAY_S},
    },
    # eventops' own data (docs/architecture.md, "Outcomes over time"). The rollup goes to the
    # pipeline queue so a long job on the slow queue never holds it up; partition upkeep
    # runs hourly (cheap when there is nothing to do) so its health figures stay fresh.
    "rollup-outcomes": {
        "task": "maintenance.rollup",
        "schedule": 60.0,
        "options": {"queue": "pipeline", "expires": 120.0},
    },
    "outcome-partitions": {
        "task": "maintenance.partitions",
        "schedule": crontab(minute=17),
        "options": {"queue": "slow", "expires": HOUR_S / 2},
    },
    "performance-review-daily": {
        "task": "maintenance.performance_review",
        "schedule": crontab(hour=0, minute=20),
        "kwargs": {"period": "daily"},
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    "performance-review-weekly": {
        "task": "maintenance.performance_review",
        "schedule": crontab(day_of_week="mon", hour=0, minute=40),
        "kwargs": {"period": "weekly"},
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    # Platform insight (docs/insight.md). KPIs and counters at 10 past each hour; p75 of Web
    # Vitals every 5 min on the pipeline queue (cheap, and never stuck behind a backup);
    # funnels, adoption and feedback daily at 03:15 NZ; experiments hourly for SRM.
    "insight-kpis": {
        "task": "insight.kpis",
        "schedule": crontab(minute=10),
        "options": {"queue": "slow", "expires": HOUR_S / 2},
    },
    "insight-vitals": {
        "task": "insight.vitals",
        "schedule": 300.0,
        "options": {"queue": "pipeline", "expires": 240.0},
    },
    "insight-analytics": {
        "task": "insight.analytics",
        "schedule": crontab(hour=14, minute=15),
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    "insight-experiments": {
        "task": "insight.experiments",
        "schedule": crontab(minute=25),
        "options": {"queue": "slow", "expires": HOUR_S / 2},
    },
    "insight-prune": {
        "task": "insight.prune",
        "schedule": crontab(hour=16, minute=45),
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    "monitor-backups": {
        "task": "backups.monitor",
        "schedule": 300.0,
        "options": {"queue": "pipeline", "expires": 600.0},
    },
    # Logs, capacity and the weekly report (docs/reports.md). Ingestion reads only what is
    # new; a tick that waited behind a long job expires, and the next one reads it all.
    "ingest-logs": {
        "task": "logs.ingest",
        "schedule": 60.0,
        "options": {"queue": "slow", "expires": 55.0},
    },
    "analyze-error-patterns": {
        "task": "logs.patterns",
        "schedule": 120.0,
        "options": {"queue": "slow", "expires": 110.0},
    },
    "rotate-logs-daily": {
        "task": "logs.rotate",
        "schedule": crontab(hour=14, minute=40),
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    "capacity-snapshot-daily": {
        "task": "reports.capacity_snapshot",
        "schedule": crontab(hour=13, minute=0),
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    # Monday 00:30 UTC, once the UTC week is complete (13:30 on Monday in Auckland).
    "weekly-performance-report": {
        "task": "reports.weekly_performance",
        "schedule": crontab(day_of_week="mon", hour=0, minute=30),
        "options": {"queue": "slow", "expires": DAY_S},
    },
    # Audit trail and compliance (docs/compliance.md).
    "audit-config-check": {
        "task": "compliance.config_check",
        "schedule": 300.0,
        "options": {"queue": "slow", "expires": 600.0},
    },
    "audit-chain-verify-and-anchor": {
        "task": "compliance.audit_chain",
        "schedule": crontab(minute=50),
        "options": {"queue": "slow", "expires": HOUR_S / 2},
    },
    "breach-notification-clocks": {
        "task": "compliance.breach_clocks",
        "schedule": 300.0,
        "options": {"queue": "slow", "expires": 600.0},
    },
    "privacy-checks-daily": {
        "task": "compliance.privacy",
        "schedule": crontab(hour=15, minute=15),
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    "vulnerability-scan-weekly": {
        "task": "compliance.vulnerability_scan",
        "schedule": crontab(day_of_week="sun", hour=16, minute=15),
        "options": {"queue": "slow", "expires": DAY_S},
    },
    "security-audit-report-monthly": {
        "task": "compliance.monthly_report",
        "schedule": crontab(day_of_month=1, hour=17, minute=0),
        "options": {"queue": "slow", "expires": DAY_S},
    },
    # Security event detection (docs/security.md): new events and every detector each minute;
    # 19:05 UTC is 08:05 in Auckland (NZDT), when the previous local day is complete.
    "security-tick": {
        "task": "security.tick",
        "schedule": 60.0,
        "options": {"queue": "slow", "expires": 55.0},
    },
    "security-daily-analysis": {
        "task": "security.daily_analysis",
        "schedule": crontab(hour=19, minute=5),
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    # Infrastructure and self-monitoring (docs/maintenance.md).
    "selfmon-heartbeat": {
        "task": "selfmon.heartbeat",
        "schedule": 15.0,
        "options": {"queue": "pipeline", "expires": 45.0},
    },
    "selfmon-check": {
        "task": "selfmon.check",
        "schedule": 30.0,
        "options": {"queue": "pipeline", "expires": 60.0},
    },
    "collect-redis-metrics": {
        "task": "metrics.redis",
        "schedule": 30.0,
        "options": {"queue": "pipeline", "expires": 60.0},
    },
    "collect-postgres-metrics": {
        "task": "metrics.postgres",
        "schedule": 60.0,
        "options": {"queue": "pipeline", "expires": 120.0},
    },
    # Database maintenance reports (report only unless maintenance.apply_fixes; fixes run
    # only inside maintenance.actions_window). 14:00 UTC is 03:00 in Auckland.
    "vacuum-report-daily": {
        "task": "maintenance.vacuum",
        "schedule": crontab(hour=14, minute=0),
        "options": {"queue": "slow", "expires": HOUR_S * 6},
    },
    "index-report-weekly": {
        "task": "maintenance.indexes",
        "schedule": crontab(day_of_week="sun", hour=14, minute=10),
        "options": {"queue": "slow", "expires": DAY_S},
    },
    "query-analysis-weekly": {
        "task": "maintenance.queries",
        "schedule": crontab(day_of_week="sun", hour=14, minute=20),
        "options": {"queue": "slow", "expires": DAY_S},
    },
}


def every_seconds(entry: Mapping[str, Any]) -> float | None:
    """An interval entry's period in seconds; None for a crontab or anything else."""
    run_every = entry.get("schedule")
    if isinstance(run_every, crontab):
        return None
    if isinstance(run_every, int | float):
        return float(run_every)
    if isinstance(run_every, timedelta):
        return run_every.total_seconds()
    if isinstance(run_every, interval_schedule):
        return float(run_every.seconds)
    return None


# Beat's ticks of a minute or less, and the probe batches they fan out, run thousands of
# times a day: the lines saying each one was sent, received and succeeded tell an operator
# nothing (what they change, an incident opened or a notification sent, is logged where it
# happens), so workers and beat log those at DEBUG (workers/logging_setup.py).
ROUTINE_TASKS = frozenset(
    {"probes.run_batch"}
    | {
        entry["task"]
        for entry in BEAT_SCHEDULE.values()
        if (seconds := every_seconds(entry)) is not None and seconds <= 60
    }
)
