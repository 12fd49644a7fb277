"""Security detection: findings, bans and their evidence (docs/security.md)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, Float, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import INET, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class SecurityEvent(Base):
    """One platform event read from a source, in the canonical shape every detector reads.

    `stream` is auth (a login), api (a request) or access (a data access); the columns a
    stream does not have stay NULL. (source, source_key) is the row's identity in its source,
    so reading the same rows twice stores them once.
    """

    __tablename__ = "security_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    stream: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    source_key: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime]
    ip: Mapped[str | None] = mapped_column(INET)
    account: Mapped[str | None] = mapped_column(Text)  # auth: the account; access: the actor
    api_key: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(Text)  # auth: failure/success; access: action
    role: Mapped[str | None] = mapped_column(Text)
    resource: Mapped[str | None] = mapped_column(Text)  # access: the table
    rows: Mapped[int | None] = mapped_column(Integer)
    method: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[int | None] = mapped_column(Integer)
    user_agent: Mapped[str | None] = mapped_column(Text)
    country: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("source", "source_key", name="uq_security_events_source_key"),
        Index("ix_security_events_stream_at", "stream", "at"),
        Index("ix_security_events_stream_ip_at", "stream", "ip", "at"),
        Index("ix_security_events_stream_account_at", "stream", "account", "at"),
    )


class SecurityFinding(Base):
    """What a detector concluded about one subject in one window, with its evidence.

    The natural key (detector, subject, window_start) makes a re-run over the same window
    update the finding instead of adding another.
    """

    __tablename__ = "security_findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    detector: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)  # brute_force, credential_stuffing, sql_injection...
    severity: Mapped[str] = mapped_column(Text)  # critical | warning | info
    subject: Mapped[str] = mapped_column(Text)  # ip:203.0.113.66, account:..., key:...
    summary: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))

    __table_args__ = (
        UniqueConstraint(
            "detector", "subject", "window_start", name="uq_security_findings_natural_key"
        ),
        Index("ix_security_findings_first_seen", "first_seen"),
    )


class SecurityBan(Base):
    """A ban the platform enforces: an IP refused, or an account locked or challenged.

    The platform reads active bans with
    `SELECT kind, value, until FROM security_bans WHERE lifted_at IS NULL AND until > now()`.
    """

    __tablename__ = "security_bans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)  # ip | account
    value: Mapped[str] = mapped_column(Text)
    jail: Mapped[str] = mapped_column(Text)  # failed_logins | recidive | distributed
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    banned_at: Mapped[datetime]
    until: Mapped[datetime]
    offence_count: Mapped[int] = mapped_column(Integer, default=1)
    lifted_at: Mapped[datetime | None]
    lifted_by: Mapped[str | None] = mapped_column(Text)
    finding_id: Mapped[int | None] = mapped_column(
        ForeignKey("security_findings.id", ondelete="SET NULL")
    )
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id", ondelete="SET NULL"))
    # The optional webhook: pending until delivered; a row, so nothing is lost to a restart.
    webhook_state: Mapped[str | None] = mapped_column(Text)  # pending | sent | failed
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        UniqueConstraint("kind", "value", "banned_at", name="uq_security_bans_natural_key"),
        Index("ix_security_bans_active", "kind", "value", "until"),
    )


class SecurityDetectorState(Base):
    """Progress of each source (its high-water mark) and each detector (the end of the last
    window it judged)."""

    __tablename__ = "security_detector_state"

    name: Mapped[str] = mapped_column(Text, primary_key=True)  # source:auth, detector:api_abuse
    cursor: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    updated_at: Mapped[datetime]


class SecurityBaseline(Base):
    """An exponentially weighted mean and variance of one key's volume per bucket."""

    __tablename__ = "security_baselines"

    detector: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    mean: Mapped[float] = mapped_column(Float, default=0.0)
    variance: Mapped[float] = mapped_column(Float, default=0.0)
    samples: Mapped[int] = mapped_column(BigInteger, default=0)
    last_bucket: Mapped[datetime]


class SecurityDailyReport(Base):
    """The daily security event analysis of one local day, as Markdown and figures."""

    __tablename__ = "security_daily_reports"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    markdown: Mapped[str] = mapped_column(Text)
    figures: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime]
