"""The weekly and daily maintenance jobs: build a report per database, store it, and run
the safe fixes when (and only when) `maintenance.apply_fixes` is on and the clock is
inside `maintenance.actions_window` (local time of the config's `timezone`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.backups.tools import Conn
from core.maintenance.indexes import Finding, index_report
from core.maintenance.pg_metrics import CONNECT_TIMEOUT_S
from core.maintenance.query_analysis import query_report
from core.maintenance.vacuum import vacuum_report
from models.config_maintenance import ActionsWindow, MaintenanceConfig
from models.maintenance import MaintenanceReport

SessionFactory = Callable[[], AbstractContextManager[Session]]
ACTOR = "eventops-maintenance"


def in_window(window: ActionsWindow, zone: str, now: datetime) -> bool:
    """Is `now` inside the daily window (which may wrap past midnight)?"""
    local = now.astimezone(ZoneInfo(zone)).time()
    start = time.fromisoformat(window.start)
    end = time.fromisoformat(window.end)
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def week_of(now: datetime) -> date:
    """The Monday (UTC) of `now`'s ISO week: weekly reports' slot."""
    day = now.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


def render(kind: str, target: str, findings: list[Finding], actions: list[dict[str, Any]]) -> str:
    lines = [f"{kind} report for {target}: {len(findings)} findings"]
    for f in findings:
        where = f" on {f.table}" if f.table else ""
        lines += [
            f"- [{f.kind}] {f.name}{where}: {f.detail}",
            "  fix: " + f.fix.replace("\n", "\n       "),
        ]
    for a in actions:
        lines.append(f"* ran: {a.get('sql', '')} -> {a.get('result')}")
    return "\n".join(lines)


def save_report(
    session: Session,
    kind: str,
    target: str,
    slot: datetime,
    findings: list[Finding],
    actions: list[dict[str, Any]],
    now: datetime,
) -> None:
    """One report per (kind, database, slot): a rerun in the same slot replaces it."""
    values = {
        "kind": kind,
        "target": target,
        "slot": slot,
        "created_at": now,
        "findings": [f.as_dict() for f in findings],
        "actions": actions,
        "text": render(kind, target, findings, actions),
    }
    statement = insert(MaintenanceReport).values(**values)
    session.execute(
        statement.on_conflict_do_update(
            constraint="uq_maintenance_reports_key",
            set_={k: statement.excluded[k] for k in ("created_at", "findings", "actions", "text")},
        )
    )


def silence_matchers(target: str) -> list[str]:
    """What a maintenance action on a database touches: the metrics of that database and
    of its tables and indexes (subjects `<target>` and `<target>:...`)."""
    return [f"subject=~{target}(:.*)?"]


def apply_safe_fixes(
    url: str,
    target: str,
    findings: list[Finding],
    config: MaintenanceConfig,
    zone: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """Run each safe finding's SQL (REINDEX CONCURRENTLY, VACUUM, ANALYZE) on its own
    autocommit connection, inside a silence over the database's subjects. Nothing runs
    unless apply_fixes is on and `now` is inside the window."""
    safe = [f for f in findings if f.safe]
    if not safe or not config.apply_fixes:
        return []
    if not in_window(config.actions_window, zone, now):
        return [
            {
                "skipped": f"outside the actions window {config.actions_window.start}-"
                f"{config.actions_window.end} {zone}",
                "pending": [f.fix for f in safe],
            }
        ]
    from core.silences import silenced

    actions: list[dict[str, Any]] = []
    with (
        silenced(
            silence_matchers(target),
            by=ACTOR,
            comment=f"maintenance on {target}: {len(safe)} safe fixes",
            longest=config.actions_silence,
        ),
        Conn.from_url(url).connect(autocommit=True) as db,
    ):
        for finding in safe:
            try:
                db.execute(finding.fix.encode())
                actions.append({"sql": finding.fix, "result": "done"})
            except psycopg.Error as error:
                # One failed REINDEX must not stop the ANALYZE after it.
                actions.append({"sql": finding.fix, "result": f"failed: {error}".strip()})
    return actions


def run_report(
    kind: str,
    targets: dict[str, str],
    sessions: SessionFactory,
    config: MaintenanceConfig,
    zone: str,
    now: datetime,
    connect_timeout: int = CONNECT_TIMEOUT_S,
) -> dict[str, Any]:
    """Build, act on (if enabled) and store the `kind` report (indexes | vacuum | queries)
    for every target. Returns {target: {"findings": n, "actions": n} or {"error": ...}}."""
    slot_day = week_of(now) if kind in ("indexes", "queries") else now.astimezone(UTC).date()
    slot = datetime.combine(slot_day, time(0), tzinfo=UTC)
    summary: dict[str, Any] = {}
    for target, url in targets.items():
        try:
            # Bounded like the collector's: a database that never answers is an error in
            # the summary, not a run held until its time limit.
            with Conn.from_url(url).connect(autocommit=True, connect_timeout=connect_timeout) as db:
                db.execute("SET statement_timeout = '5min'")
                if kind == "indexes":
                    findings = index_report(
                        db,
                        target,
                        bloat_ratio=config.index_bloat_ratio,
                        min_bloat_bytes=config.min_index_bloat_bytes,
                    )
                elif kind == "vacuum":
                    findings = vacuum_report(
                        db,
                        target,
                        dead_ratio=config.dead_tuple_ratio,
                        min_dead=config.min_dead_tuples,
                        stale_ratio=config.stale_statistics_ratio,
                        min_modified=config.min_modified_rows,
                    )
                else:
                    with sessions() as session:
                        findings = query_report(
                            session,
                            db,
                            target,
                            slot_day,
                            now,
                            top_n=config.top_n,
                            regression_ratio=config.query_regression_ratio,
                        )
        except psycopg.Error as error:
            summary[target] = {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
            continue
        actions = (
            apply_safe_fixes(url, target, findings, config, zone, now) if kind != "queries" else []
        )
        with sessions() as session:
            save_report(session, kind, target, slot, findings, actions, now)
        summary[target] = {
            "findings": len(findings),
            "kinds": sorted({f.kind for f in findings}),
            "actions": len([a for a in actions if "sql" in a]),
        }
    return summary
