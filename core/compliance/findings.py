"""Findings of the compliance checks: one open row per (check, key) while it lasts.

Each run of a check hands over everything it sees now; findings it no longer sees are
resolved. A rerun changes nothing but `last_seen` (idempotent, ON CONFLICT on the open key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models.compliance import ComplianceFinding, ComplianceRun

SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")


def at_least(severity: str, floor: str) -> bool:
    """Whether `severity` is `floor` or worse."""
    rank = {name: index for index, name in enumerate(SEVERITY_ORDER)}
    return rank.get(severity, len(SEVERITY_ORDER)) <= rank[floor]


@dataclass(frozen=True)
class Finding:
    key: str
    severity: str
    title: str
    evidence: dict[str, Any] = field(default_factory=dict)


def sync_findings(
    session: Session,
    check: str,
    findings: Sequence[Finding],
    now: datetime,
    summary: dict[str, Any] | None = None,
    resolve_gone: bool = True,
) -> dict[str, int]:
    """Store this run's findings of `check`, resolve the ones gone (unless the run could not
    see everything: `resolve_gone=False`), record the run."""
    keys = [f.key for f in findings]
    for finding in findings:
        statement = insert(ComplianceFinding).values(
            check=check,
            key=finding.key,
            severity=finding.severity,
            title=finding.title,
            evidence=finding.evidence,
            first_seen=now,
            last_seen=now,
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["check", "key"],
                index_where=text("resolved_at IS NULL"),
                set_={
                    "severity": statement.excluded.severity,
                    "title": statement.excluded.title,
                    "evidence": statement.excluded.evidence,
                    "last_seen": statement.excluded.last_seen,
                },
            )
        )
    gone: Sequence[Any] = []
    if resolve_gone:
        gone = session.execute(
            update(ComplianceFinding)
            .where(
                ComplianceFinding.check == check,
                ComplianceFinding.resolved_at.is_(None),
                ComplianceFinding.key.not_in(keys) if keys else text("true"),
            )
            .values(resolved_at=now)
            .returning(ComplianceFinding.id)
        ).all()
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    session.add(
        ComplianceRun(
            check=check,
            at=now,
            ok=not findings,
            summary={"findings": len(findings), "by_severity": counts, **(summary or {})},
        )
    )
    return {"findings": len(findings), "resolved": len(gone), **counts}


def open_findings(session: Session, check: str | None = None) -> list[ComplianceFinding]:
    query = select(ComplianceFinding).where(ComplianceFinding.resolved_at.is_(None))
    if check:
        query = query.where(ComplianceFinding.check == check)
    rows = session.scalars(query.order_by(ComplianceFinding.check, ComplianceFinding.key)).all()
    rank = {name: index for index, name in enumerate(SEVERITY_ORDER)}
    return sorted(rows, key=lambda f: (rank.get(f.severity, 9), f.check, f.key))
