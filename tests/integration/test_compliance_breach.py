"""The breach-notification clock on real Postgres with an injected clock: it starts when a
data breach incident opens, reminds as it runs down, goes critical when overdue, and stops
when the notification is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.audit import verify_chain
from core.compliance.breach import (
    NOTIFY_PREFIX,
    OVERDUE_PREFIX,
    REMINDER_STEP,
    stop_clock,
    tick,
)
from core.incidents import Problem, raise_problem
from models.compliance import AuditEntry, BreachClock
from models.db import session_scope
from models.tables import Escalation, Incident, IncidentEvent
from tests.conftest import make_config

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def open_breach(config, labels=None, fingerprint="security:breach:bulk-export:admin5"):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        incident_id = raise_problem(
            session,
            Problem(
                fingerprint=fingerprint,
                title="Bulk export of customer records at 03:00",
                severity="critical",
                summary="admin 5 exported 900 users",
                labels=labels if labels is not None else {"category": "data_breach"},
                category="security",
            ),
            config,
            T0,
        )
    assert incident_id is not None
    return incident_id


def tick_at(config, at):  # type: ignore[no-untyped-def]
    with session_scope() as session:
        return tick(session, config, at)


def incident(fingerprint: str) -> Incident | None:
    with session_scope() as session:
        return session.scalars(select(Incident).where(Incident.fingerprint == fingerprint)).first()


def test_breach_clock_escalates_as_it_runs_down(clean_db: str) -> None:
    config = make_config()
    breach = open_breach(config)
    assert tick_at(config, T0 + timedelta(minutes=1))["started"] == 1
    notify = incident(f"{NOTIFY_PREFIX}{breach}")
    assert notify is not None and notify.severity == "warning"
    assert "2026-11-30 09:00" in notify.title  # 72 h after the breach opened

    # Nothing to say a day in; at 48 h left, at 24 h left and at 6 h left, one reminder each.
    assert tick_at(config, T0 + timedelta(hours=23))["reminders"] == 0
    assert tick_at(config, T0 + timedelta(hours=24, minutes=5))["reminders"] == 1
    assert tick_at(config, T0 + timedelta(hours=30))["reminders"] == 0
    assert tick_at(config, T0 + timedelta(hours=48))["reminders"] == 1
    assert tick_at(config, T0 + timedelta(hours=66, minutes=1))["reminders"] == 1
    assert tick_at(config, T0 + timedelta(hours=70))["reminders"] == 0
    with session_scope() as session:
        steps = session.scalars(
            select(Escalation.step)
            .where(Escalation.incident_id == notify.id, Escalation.kind == "reminder")
            .order_by(Escalation.step)
        ).all()
        events = session.scalars(
            select(IncidentEvent.detail)
            .where(IncidentEvent.incident_id == breach, IncidentEvent.kind == "breach clock")
            .order_by(IncidentEvent.id)
        ).all()
    assert steps == [REMINDER_STEP, REMINDER_STEP + 1, REMINDER_STEP + 2]
    assert [e.split(" left")[0] for e in events] == ["47.9167 h", "24 h", "5.98333 h"]

    assert incident(f"{OVERDUE_PREFIX}{breach}") is None
    assert tick_at(config, T0 + timedelta(hours=72, minutes=1))["overdue"] == 1
    overdue = incident(f"{OVERDUE_PREFIX}{breach}")
    assert overdue is not None and overdue.severity == "critical" and overdue.status == "open"
    assert tick_at(config, T0 + timedelta(hours=73))["overdue"] == 0  # once


def test_a_late_tick_gives_one_reminder_for_the_thresholds_it_missed(clean_db: str) -> None:
    config = make_config()
    breach = open_breach(config)
    tick_at(config, T0)
    assert tick_at(config, T0 + timedelta(hours=60))["reminders"] == 1
    with session_scope() as session:
        clock = session.get(BreachClock, breach)
        assert clock is not None
        assert sorted(clock.reminded) == [24 * 3600.0, 48 * 3600.0]


def test_recording_the_notification_stops_the_clock_and_is_audited(clean_db: str) -> None:
    config = make_config()
    breach = open_breach(config)
    tick_at(config, T0)
    with session_scope() as session:
        stop_clock(
            session,
            config,
            breach,
            by="privacy-officer",
            outcome="notified",
            note="OPC ref 2026-118",
            now=T0 + timedelta(hours=30),
        )
    assert tick_at(config, T0 + timedelta(hours=73)) == {
        "started": 0,
        "clocks": 0,
        "reminders": 0,
        "overdue": 0,
    }
    notify = incident(f"{NOTIFY_PREFIX}{breach}")
    assert notify is not None and notify.status == "resolved"
    assert incident(f"{OVERDUE_PREFIX}{breach}") is None
    with session_scope() as session:
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert verify_chain(session).ok
    assert actions == ["breach.clock.start", "breach.notified"]


def test_not_notifiable_needs_a_reason(clean_db: str) -> None:
    config = make_config()
    breach = open_breach(config)
    tick_at(config, T0)
    with session_scope() as session, pytest.raises(ValueError, match="say why"):
        stop_clock(session, config, breach, by="dpo", outcome="not-notifiable")


def test_matching_is_by_labels_or_fingerprint_prefix_and_configurable(clean_db: str) -> None:
    config = make_config(
        compliance={"breach": {"matchers": ["kind=exfiltration"], "fingerprint_prefixes": []}}
    )
    open_breach(config, labels={"category": "data_breach"}, fingerprint="x:1")
    exfil = open_breach(config, labels={"kind": "exfiltration"}, fingerprint="x:2")
    assert tick_at(config, T0)["started"] == 1
    with session_scope() as session:
        assert session.scalars(select(BreachClock.incident_id)).all() == [exfil]
    default = make_config()
    by_prefix = open_breach(default, labels={}, fingerprint="security:breach:new-country:u7")
    assert tick_at(default, T0)["started"] == 2  # x:1 by label, and the prefixed one
    with session_scope() as session:
        assert by_prefix in session.scalars(select(BreachClock.incident_id)).all()
