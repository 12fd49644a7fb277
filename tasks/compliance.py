"""Audit-trail and compliance tasks (core/compliance holds the logic).

Each is idempotent: verification and anchoring change nothing when run twice, findings are
keyed per (check, key), clocks remind once per threshold, and a report rewrites its files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.clock import utcnow
from models.db import session_scope
from tasks.retry import RETRY
from workers.app import app
from workers.settings import get_config, get_settings


def reports_dir() -> Path:
    return get_config().compliance.reports_dir or get_settings().var_dir / "reports"


@app.task(name="compliance.config_check", soft_time_limit=50, time_limit=60, **RETRY)
def config_check() -> dict[str, Any]:
    """Audit the config file when its content changed since the last time it was seen."""
    from core.audit import record_config

    path = get_settings().config_file
    with session_scope() as session:
        changed = record_config(session, path)
    return {"config": str(path), "changed": changed}


@app.task(name="compliance.audit_chain", soft_time_limit=550, time_limit=600, **RETRY)
def audit_chain() -> dict[str, Any]:
    """Verify the whole audit chain against itself and its anchors (critical incident on any
    tampering), then anchor the head in the table and the anchor file."""
    from core.audit import anchor, verify_and_alert

    var_dir = get_settings().var_dir
    now = utcnow()
    with session_scope() as session:
        report = verify_and_alert(session, get_config(), var_dir, now)
    anchored = None
    if report.ok:
        with session_scope() as session:
            anchored = anchor(session, var_dir, now)
    return {**report.summary(), "anchored": anchored.last_id if anchored else None}


@app.task(name="compliance.breach_clocks", soft_time_limit=50, time_limit=60, **RETRY)
def breach_clocks() -> dict[str, Any]:
    """Start clocks for new data breach incidents; remind and escalate as they run down."""
    from core.compliance.breach import tick

    with session_scope() as session:
        summary = tick(session, get_config(), utcnow())
    if summary["reminders"] or summary["overdue"]:
        from tasks.escalation import sweep

        sweep.delay()
    return summary


@app.task(name="compliance.privacy", soft_time_limit=550, time_limit=600, **RETRY)
def privacy() -> dict[str, Any]:
    """Access-logging coverage, retention and data subject requests on the platform DB."""
    from core.backups.tools import Conn
    from core.compliance.privacy import run_privacy_checks

    config = get_config()
    if not config.compliance.enabled:
        return {"skipped": "compliance is disabled in the config"}
    url = get_settings().platform_database_url
    if url is None:
        return {"skipped": "EVENTOPS_PLATFORM_DATABASE_URL is not set"}
    with session_scope() as session:
        return run_privacy_checks(session, config, Conn.from_url(url.get_secret_value()), utcnow())


@app.task(name="compliance.vulnerability_scan", soft_time_limit=1700, time_limit=1800, **RETRY)
def vulnerability_scan() -> dict[str, Any]:
    """The weekly dependency scan against the configured OSV advisories."""
    from core.compliance.vulnerabilities import run_scan

    config = get_config()
    if not config.compliance.enabled:
        return {"skipped": "compliance is disabled in the config"}
    with session_scope() as session:
        return run_scan(session, config, utcnow())


@app.task(name="compliance.monthly_report", soft_time_limit=550, time_limit=600, **RETRY)
def monthly_report(month: str | None = None) -> dict[str, Any]:
    """The security audit report for `month` (YYYY-MM; default: the month that just ended)."""
    from core.compliance.report import previous_month, write_report

    now = utcnow()
    month = month or previous_month(now)
    with session_scope() as session:
        markdown, page = write_report(session, reports_dir(), month, now)
    return {"month": month, "markdown": str(markdown), "html": str(page)}
