"""eventops' own Postgres tables: checks and their state, outcomes, incidents, escalations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Check(Base):
    """A configured check, its schedule and its current state in one row.

    `next_due_at` is the schedule: the dispatcher claims rows whose slot has come.
    `inflight_slot` is a lease on a dispatched slot: if its outcome has not arrived by
    `lease_until` (the task was lost with a flushed Redis or a killed worker), the
    dispatcher sends the same slot again, so no slot is silently skipped.
    """

    __tablename__ = "checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text, default="http")
    url: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text, default="GET")
    expected_status: Mapped[list[int]] = mapped_column(JSONB)
    interval_s: Mapped[float] = mapped_column(Float)
    timeout_s: Mapped[float] = mapped_column(Float)
    max_body_bytes: Mapped[int] = mapped_column(Integer)
    alert_threshold: Mapped[int] = mapped_column(SmallInteger)
    recovery_threshold: Mapped[int] = mapped_column(SmallInteger)
    severity: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(default=True)
    group_name: Mapped[str] = mapped_column(Text)
    depends_on: Mapped[list[str]] = mapped_column(JSONB, default=list)
    category: Mapped[str] = mapped_column(Text, default="availability")
    impact: Mapped[str | None] = mapped_column(Text)

    next_due_at: Mapped[datetime]
    inflight_slot: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    dispatch_attempts: Mapped[int] = mapped_column(SmallInteger, default=0)

    status: Mapped[str] = mapped_column(Text, default="unknown")  # unknown | up | down
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_successes: Mapped[int] = mapped_column(Integer, default=0)
    last_slot: Mapped[datetime | None]
    last_checked_at: Mapped[datetime | None]
    last_latency_ms: Mapped[float | None]
    last_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # The dispatcher's two claims: idle enabled checks by due time, leases by expiry.
        Index(
            "ix_checks_due",
            "next_due_at",
            postgresql_where=text("enabled AND inflight_slot IS NULL"),
        ),
        Index("ix_checks_lease", "lease_until", postgresql_where=text("inflight_slot IS NOT NULL")),
        # The dashboard's keyset pages in byte order, filtered by state or group (0008).
        Index("ix_checks_name_c", text('name COLLATE "C"')),
        Index("ix_checks_status_name", "status", text('name COLLATE "C"')),
        Index("ix_checks_group_name", "group_name", text('name COLLATE "C"')),
    )


class Outcome(Base):
    """One probe of one check for one scheduled slot; (check, slot) is the idempotency key.

    Range-partitioned by `slot`, one partition a day plus a default one (migration 0005,
    core/partitions.py); every unique key of a partitioned table includes `slot`.
    """

    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    check_id: Mapped[int] = mapped_column(ForeignKey("checks.id", ondelete="CASCADE"))
    slot: Mapped[datetime] = mapped_column(primary_key=True)
    observed_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(Text)  # up | down | missed
    latency_ms: Mapped[float | None]
    http_status: Mapped[int | None] = mapped_column(SmallInteger)
    reason: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("check_id", "slot", name="uq_outcomes_check_slot"),
        # The rollup reads the newest minute across every check. Not BRIN: ranges written
        # since the last vacuum are unsummarized, so the newest rows would always be scanned.
        Index("ix_outcomes_slot", "slot"),
        {"postgresql_partition_by": "RANGE (slot)"},
    )


class Incident(Base):
    """A problem, open until resolved; at most one unresolved incident per fingerprint."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(Text)
    check_id: Mapped[int | None] = mapped_column(ForeignKey("checks.id", ondelete="SET NULL"))
    rule: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    # Classification: what broke, how bad, what users lose. Labels drive grouping and silences.
    severity: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(Text, default="availability")
    impact: Mapped[str | None] = mapped_column(Text)
    labels: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    status: Mapped[str] = mapped_column(Text, default="open")  # open | acknowledged | resolved
    opened_at: Mapped[datetime]
    notified_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None]
    summary: Mapped[str | None] = mapped_column(Text)
    # Held open while the problem flaps; `reopen_count` counts resolve/reopen cycles.
    flapping: Mapped[bool] = mapped_column(default=False)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    reopened_at: Mapped[datetime | None]
    # A dependency's incident that explains this one: while it is open, this one pages nobody.
    parent_incident_id: Mapped[int | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="SET NULL")
    )
    promoted_at: Mapped[datetime | None]
    postmortem: Mapped[str | None] = mapped_column(Text)
    # The detector's own delay before the first page (a rule's escalate_after), kept so an
    # incident released by its parent later still waits as its rule says.
    escalate_after_s: Mapped[float | None]

    __table_args__ = (
        Index(
            "uq_incidents_open_fingerprint",
            "fingerprint",
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
        ),
    )


class IncidentEvent(Base):
    """The incident's timeline: every transition and notification, with who and when."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text, default="eventops")
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_incident_events_incident", "incident_id", "at"),)


class Escalation(Base):
    """A pending escalation step; delayed work is a row with `due_at`, never a Redis ETA."""

    __tablename__ = "escalations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(SmallInteger)
    # opened (a rung of the chain) | reminder | promote | resolved | reopened | flapping |
    # digest | status-opened | status-update | status-resolved (the communication plan)
    kind: Mapped[str] = mapped_column(Text)
    # Steps with the same key, kind and step number that fire together share one message.
    group_key: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime]
    state: Mapped[str] = mapped_column(Text, default="pending")  # pending | fired | cancelled
    fired_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("incident_id", "step", "kind", name="uq_escalations_step"),
        Index("ix_escalations_due", "due_at", postgresql_where=text("state = 'pending'")),
    )


class Notification(Base):
    """The outbox: one message to one channel, covering one or more incidents (a group)."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    channel: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)  # opened | reminder | resolved | digest | ...
    group_key: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # Set on the copy sent to a fallback channel after the original kept failing.
    fallback_for: Mapped[int | None] = mapped_column(
        ForeignKey("notifications.id", ondelete="SET NULL"), unique=True
    )

    __table_args__ = (
        Index(
            "ix_notifications_due", "next_attempt_at", postgresql_where=text("state = 'pending'")
        ),
    )


class NotificationItem(Base):
    """Which incident steps a message carries. The unique key is the exactly-once promise:
    one incident's step reaches one channel in one message, whatever is redelivered."""

    __tablename__ = "notification_items"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    notification_id: Mapped[int] = mapped_column(
        ForeignKey("notifications.id", ondelete="CASCADE"), index=True
    )
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(SmallInteger)
    kind: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint(
            "incident_id", "step", "kind", "channel", name="uq_notification_items_key"
        ),
    )


class ChannelHealth(Base):
    """Per channel: consecutive failures, so a channel that keeps failing gets an incident."""

    __tablename__ = "channel_health"

    channel: Mapped[str] = mapped_column(Text, primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_failure_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]


class Silence(Base):
    """Mutes notifications for incidents whose labels match, between two times.
    Incidents still open, resolve and keep their timeline; only pages wait."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matchers: Mapped[list[str]] = mapped_column(JSONB)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(Text)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_silences_ends_at", "ends_at"),)


class Metric(Base):
    """A sample of a named metric for a subject (a host, the platform, a table, ...).
    Later duties write here (memory usage, registrations, Web Vitals); rules read it."""

    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text, default="platform")
    value: Mapped[float]
    at: Mapped[datetime]

    __table_args__ = (Index("ix_metrics_name_at", "name", "at"),)


class RuleState(Base):
    """Where each (rule, subject) stands between evaluations."""

    __tablename__ = "rule_states"

    rule: Mapped[str] = mapped_column(Text, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, primary_key=True)
    breaching_since: Mapped[datetime | None]
    clear_evaluations: Mapped[int] = mapped_column(Integer, default=0)
    last_value: Mapped[float | None]
    last_evaluated_at: Mapped[datetime | None]


class Backup(Base):
    """One backup run, keyed by (kind, slot): a duplicate tick or a redelivered task finds the
    row and does nothing. `heartbeat_at` is the running job's lease."""

    __tablename__ = "backups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)  # hourly | daily | base | files | config
    slot: Mapped[datetime]
    state: Mapped[str] = mapped_column(Text, default="running")  # running | succeeded | failed
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # The consistent point the backup captures: what the RPO is measured from.
    snapshot_at: Mapped[datetime | None]
    path: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float | None]
    encrypted: Mapped[bool] = mapped_column(default=False)
    # Per table at dump time: {"public.users": {"rows": 120, "checksum": "md5..."}}.
    tables: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    verify_state: Mapped[str] = mapped_column(Text, default="unverified")  # | verified | corrupt
    verified_at: Mapped[datetime | None]
    verify_error: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    deleted_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("kind", "slot", name="uq_backups_kind_slot"),)


class RestoreRun(Base):
    """A restore test, a point-in-time restore or a disaster-recovery drill, with what it
    measured (RTO: wall time to restored; RPO: age of the newest restorable point)."""

    __tablename__ = "restore_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)  # restore-test | pitr | drill
    slot: Mapped[datetime]
    backup_id: Mapped[int | None] = mapped_column(ForeignKey("backups.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(Text, default="running")  # running | passed | failed
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    target: Mapped[str | None] = mapped_column(Text)
    rto_s: Mapped[float | None]
    rpo_s: Mapped[float | None]
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    report: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("kind", "slot", name="uq_restore_runs_kind_slot"),)


# Every duty keeps its tables in a module of its own; importing them here puts them all on
# Base.metadata, which Alembic, the tests' TRUNCATE and create_all read.
from models import compliance, insight, logs, maintenance, rollups, security  # noqa: E402,F401
