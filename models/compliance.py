"""Audit trail and compliance: the hash-chained audit log, privacy requests, scans."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class AuditEntry(Base):
    """One action of eventops or of a person through it. Append-only: a trigger refuses
    UPDATE and DELETE (see migration 0003), and each row's hash covers its content and the
    previous row's hash, so an edit, a deletion, an insertion or a reordering breaks the chain."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    prev_hash: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_audit_log_action_at", "action", "at"),)


class AuditAnchor(Base):
    """The chain's head as it was at a moment, kept apart from the chain (also in a file under
    the var dir): rows up to `last_id` must still hash to what they did then."""

    __tablename__ = "audit_anchors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime]
    last_id: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(Text)
    rows: Mapped[int] = mapped_column(BigInteger)


class AuditSeal(Base):
    """A break in the chain that people investigated and accepted: verification trusts the
    rows up to `through_id` as they were when sealed (their digest must not change) and walks
    the chain from there. Sealing is itself an audited action."""

    __tablename__ = "audit_seals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime]
    by: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    through_id: Mapped[int] = mapped_column(BigInteger)
    through_hash: Mapped[str] = mapped_column(Text)
    sealed_digest: Mapped[str] = mapped_column(Text)
    report: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class ComplianceFinding(Base):
    """Something a compliance check found: a table with no access logging, data kept past its
    retention, an overdue data subject request, a vulnerable package. One row per (check, key)
    while it lasts; `resolved_at` is set when a later run of the same check no longer sees it."""

    __tablename__ = "compliance_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    check: Mapped[str] = mapped_column(Text)  # access-logging | retention | dsr | vulnerability
    key: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(Text)  # critical | high | medium | low | info
    title: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    resolved_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "uq_compliance_findings_open_key",
            "check",
            "key",
            unique=True,
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )


class ComplianceRun(Base):
    """One run of a compliance check with its summary, for the report and the CLI."""

    __tablename__ = "compliance_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    check: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    ok: Mapped[bool]
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class BreachClock(Base):
    """The notification clock of a data breach incident: it starts when the incident opens and
    runs until someone records that the regulator was notified (or that it was not needed)."""

    __tablename__ = "breach_clocks"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), primary_key=True
    )
    started_at: Mapped[datetime]
    deadline_at: Mapped[datetime]
    # Reminders already given, as hours left (48, 24, 6): each is given once.
    reminded: Mapped[list[float]] = mapped_column(JSONB, default=list)
    overdue_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    stopped_by: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(Text)  # notified | not-notifiable
    note: Mapped[str | None] = mapped_column(Text)
