"""Privacy checks against the platform's database: access-logging coverage, retention, and
data subject requests against their statutory deadlines. Read-only: every check runs in a
READ ONLY transaction on the platform, and its findings are stored in eventops' database.

Access-logging coverage, precisely (docs/compliance.md):
- a table in `personal_tables` that does not exist: finding (medium), the list is stale;
- the access-log table itself missing: one finding (high), nothing is logged;
- a personal table with rows but no access-log row naming it in the last `window`: a gap
  (high), reads of it are not being logged;
- a table outside `personal_tables` and `ignore_tables` with a column named like personal
  data (`personal_columns`): finding (medium), it is not in the logged set at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.backups.tools import Conn
from core.compliance.deadlines import deadline_for
from core.compliance.findings import Finding, sync_findings
from models.config import EventopsConfig
from models.config_compliance import (
    AccessLoggingConfig,
    ComplianceConfig,
    DataSubjectRequestsConfig,
    RetentionRule,
)

DSR_FINGERPRINT = "compliance:dsr-overdue"
RETENTION_FINGERPRINT = "compliance:retention"


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split("."))


@contextmanager
def read_only(conn: Conn) -> Iterator[psycopg.Connection[Any]]:
    with conn.connect(autocommit=False) as db:
        db.execute("SET TRANSACTION READ ONLY")
        db.execute("SET LOCAL statement_timeout = '120s'")
        yield db
        db.rollback()


def _exists(db: psycopg.Connection[Any], table: str) -> bool:
    row = db.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


# --- access logging ---------------------------------------------------------------------------


def access_logging_findings(
    db: psycopg.Connection[Any], cfg: AccessLoggingConfig, now: datetime
) -> list[Finding]:
    findings: list[Finding] = []
    if not _exists(db, cfg.log_table):
        return [
            Finding(
                key=f"log-table:{cfg.log_table}",
                severity="high",
                title=f"No access log: table {cfg.log_table} does not exist",
                evidence={"log_table": cfg.log_table},
            )
        ]
    since = now - cfg.window
    logged = dict(
        db.execute(
            sql.SQL(
                "SELECT {col}, max({at}) FROM {log} WHERE {col} = ANY(%s) GROUP BY {col}"
            ).format(
                col=_ident(cfg.table_column), at=_ident(cfg.at_column), log=_ident(cfg.log_table)
            ),
            (list(cfg.personal_tables),),
        ).fetchall()
    )
    for table in cfg.personal_tables:
        if not _exists(db, table):
            findings.append(
                Finding(
                    key=f"missing:{table}",
                    severity="medium",
                    title=f"Personal table {table} is configured but does not exist",
                    evidence={"table": table},
                )
            )
            continue
        has_rows = db.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(_ident(table))
        ).fetchone()
        last = logged.get(table)
        if has_rows and has_rows[0] and (last is None or last < since):
            findings.append(
                Finding(
                    key=f"gap:{table}",
                    severity="high",
                    title=f"Access to personal table {table} is not logged"
                    + (f" (last logged {last:%Y-%m-%d})" if last else " (never logged)"),
                    evidence={
                        "table": table,
                        "window_days": cfg.window.total_seconds() / 86400,
                        "last_logged_at": last.isoformat() if last else None,
                    },
                )
            )
    unlisted = db.execute(
        """
        SELECT c.table_schema, c.table_name, array_agg(c.column_name ORDER BY c.column_name)
        FROM information_schema.columns AS c
        JOIN information_schema.tables AS t
          ON t.table_schema = c.table_schema AND t.table_name = c.table_name
        WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema')
          AND t.table_type = 'BASE TABLE'
          AND c.column_name = ANY(%s)
        GROUP BY c.table_schema, c.table_name
        ORDER BY 1, 2
        """,
        (list(cfg.personal_columns),),
    ).fetchall()
    listed = {name.split(".")[-1] for name in [*cfg.personal_tables, *cfg.ignore_tables]}
    for schema, table, columns in unlisted:
        if table in listed or f"{schema}.{table}" in listed:
            continue
        name = table if schema == "public" else f"{schema}.{table}"
        findings.append(
            Finding(
                key=f"unlisted:{name}",
                severity="medium",
                title=f"Table {name} holds personal data ({', '.join(columns)}) but is not in "
                "the access-logged set",
                evidence={"table": name, "columns": list(columns)},
            )
        )
    return findings


# --- retention --------------------------------------------------------------------------------


def retention_findings(
    db: psycopg.Connection[Any], rules: list[RetentionRule], now: datetime
) -> list[Finding]:
    findings: list[Finding] = []
    for rule in rules:
        cutoff = now - rule.keep
        condition = sql.SQL(" AND ({})").format(sql.SQL(rule.where)) if rule.where else sql.SQL("")
        query = sql.SQL("SELECT count(*), min({col}) FROM {table} WHERE {col} < %s{cond}").format(
            col=_ident(rule.column), table=_ident(rule.table), cond=condition
        )
        db.execute("SAVEPOINT retention_rule")
        try:
            row = db.execute(query, (cutoff,)).fetchone()
        except psycopg.Error as error:
            db.execute("ROLLBACK TO SAVEPOINT retention_rule")
            findings.append(
                Finding(
                    key=f"unchecked:{rule.table}.{rule.column}",
                    severity="medium",
                    title=f"Retention of {rule.table} cannot be checked: "
                    f"{str(error).splitlines()[0]}",
                    evidence={"table": rule.table, "column": rule.column},
                )
            )
            continue
        count, oldest = (row[0], row[1]) if row else (0, None)
        if count:
            days = rule.keep.total_seconds() / 86400
            findings.append(
                Finding(
                    key=f"expired:{rule.table}.{rule.column}",
                    severity="high",
                    title=f"{count} rows of {rule.table} kept past their {days:g}-day retention",
                    evidence={
                        "table": rule.table,
                        "column": rule.column,
                        "rows": int(count),
                        "oldest": oldest.isoformat() if oldest else None,
                        "cutoff": cutoff.isoformat(),
                        "keep_days": days,
                        "where": rule.where,
                    },
                )
            )
    return findings


# --- data subject requests --------------------------------------------------------------------


@dataclass(frozen=True)
class RequestDeadline:
    id: Any
    kind: str
    received_at: datetime
    regimes: tuple[str, ...]
    deadline: datetime
    governing: str


def request_deadline(
    received_at: datetime,
    regime: str | None,
    cfg: DataSubjectRequestsConfig,
    zone: ZoneInfo,
) -> tuple[datetime, str, tuple[str, ...]]:
    """The earliest deadline over the request's regimes, and which regime sets it."""
    regimes = (regime,) if regime in ("nz", "gdpr") else tuple(cfg.default_regimes)
    summer_end = (1, int(cfg.nz_summer_period_ends.split("-")[1]))
    dated = sorted(
        (deadline_for(name, received_at, zone, summer_end), name) for name in regimes if name
    )
    return dated[0][0], dated[0][1], tuple(r for r in regimes if r)


def open_requests(
    db: psycopg.Connection[Any], cfg: DataSubjectRequestsConfig, zone: ZoneInfo
) -> list[RequestDeadline]:
    regime = _ident(cfg.regime_column) if cfg.regime_column else sql.SQL("NULL::text")
    rows = db.execute(
        sql.SQL(
            "SELECT {id}, {kind}, {received}, {regime} FROM {table} WHERE {completed} IS NULL "
            "ORDER BY {received}"
        ).format(
            id=_ident(cfg.id_column),
            kind=_ident(cfg.kind_column),
            received=_ident(cfg.received_column),
            regime=regime,
            table=_ident(cfg.table),
            completed=_ident(cfg.completed_column),
        )
    ).fetchall()
    found = []
    for request_id, kind, received_at, regime_name in rows:
        deadline, governing, regimes = request_deadline(received_at, regime_name, cfg, zone)
        found.append(RequestDeadline(request_id, kind, received_at, regimes, deadline, governing))
    return found


def request_findings(
    db: psycopg.Connection[Any], cfg: DataSubjectRequestsConfig, zone: ZoneInfo, now: datetime
) -> list[Finding]:
    if not _exists(db, cfg.table):
        return [
            Finding(
                key=f"missing:{cfg.table}",
                severity="medium",
                title=f"Data subject requests cannot be checked: no table {cfg.table}",
                evidence={"table": cfg.table},
            )
        ]
    findings = []
    for request in open_requests(db, cfg, zone):
        late = now - request.deadline
        evidence = {
            "request": str(request.id),
            "kind": request.kind,
            "received_at": request.received_at.isoformat(),
            "deadline": request.deadline.isoformat(),
            "regime": request.governing,
            "regimes": list(request.regimes),
        }
        if late.total_seconds() > 0:
            findings.append(
                Finding(
                    key=f"overdue:{request.id}",
                    severity="high",
                    title=f"{request.kind.capitalize()} request {request.id} is overdue "
                    f"({request.governing.upper()} deadline {request.deadline:%Y-%m-%d}, "
                    f"{late.days} days late)",
                    evidence=evidence,
                )
            )
        elif -late <= cfg.warn_before:
            findings.append(
                Finding(
                    key=f"due-soon:{request.id}",
                    severity="medium",
                    title=f"{request.kind.capitalize()} request {request.id} is due "
                    f"{request.deadline:%Y-%m-%d %H:%M %Z} ({request.governing.upper()})",
                    evidence=evidence,
                )
            )
    return findings


# --- the daily run ----------------------------------------------------------------------------


def still_expired(session: Session, retention: list[Finding]) -> list[Finding]:
    """A rule that could not be checked this time (its query failed) says nothing about its
    rows: its open `expired` finding is carried over as it was, so neither it nor the
    retention incident resolves on a failed query."""
    from models.compliance import ComplianceFinding

    keys = [
        "expired:" + f.key.removeprefix("unchecked:")
        for f in retention
        if f.key.startswith("unchecked:")
    ]
    if not keys:
        return []
    kept = session.scalars(
        select(ComplianceFinding).where(
            ComplianceFinding.check == "retention",
            ComplianceFinding.resolved_at.is_(None),
            ComplianceFinding.key.in_(keys),
        )
    )
    return [Finding(k.key, k.severity, k.title, dict(k.evidence or {})) for k in kept]


def run_privacy_checks(
    session: Session, config: EventopsConfig, platform: Conn, now: datetime
) -> dict[str, Any]:
    """Access logging, retention and requests: findings stored per check; overdue requests and
    retention breaches each open a warning incident (resolved when they clear)."""
    from core.incidents import Problem, raise_problem, resolve_problem

    cfg: ComplianceConfig = config.compliance
    zone = ZoneInfo(cfg.timezone)
    with read_only(platform) as db:
        access = access_logging_findings(db, cfg.access_logging, now)
        retention = retention_findings(db, list(cfg.retention), now)
        requests = request_findings(db, cfg.data_subject_requests, zone, now)
    retention += still_expired(session, retention)
    summary = {
        "access-logging": sync_findings(session, "access-logging", access, now),
        "retention": sync_findings(session, "retention", retention, now),
        "dsr": sync_findings(session, "dsr", requests, now),
    }
    for fingerprint, items, what in (
        (DSR_FINGERPRINT, [f for f in requests if f.key.startswith("overdue:")], "requests"),
        (RETENTION_FINGERPRINT, [f for f in retention if f.key.startswith("expired:")], "tables"),
    ):
        if not items:
            resolve_problem(session, fingerprint, config, now, why="nothing overdue any more")
            continue
        title = (
            f"{len(items)} data subject {what} overdue"
            if what == "requests"
            else f"Personal data kept past retention in {len(items)} {what}"
        )
        raise_problem(
            session,
            Problem(
                fingerprint=fingerprint,
                title=title,
                severity="warning",
                summary="; ".join(f.title for f in items[:10]),
                labels={"category": "privacy", "duty": "compliance"},
                category="data",
            ),
            config,
            now,
        )
    return summary
