"""The sweeper on real Postgres, delivering through real Apprise to a real local webhook."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.escalation import SEND_LEASE, claim_notifications, retry_delay, sweep
from core.pipeline import record_outcomes
from core.probing import ProbeResult
from core.schedule import sync_checks
from models.config import EventopsConfig
from models.db import session_scope
from models.tables import Check, Incident, IncidentEvent, Notification
from tests.conftest import make_config
from tests.receivers import WebhookReceiver

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


def config_for(receiver: WebhookReceiver, severity: str = "critical") -> EventopsConfig:
    return make_config(
        checks=[
            {
                "name": "stripe",
                "url": "http://127.0.0.1:9/",
                "interval": "1m",
                "timeout": "5s",
                "severity": severity,
                "recovery_threshold": 1,
            }
        ],
        channels=[{"name": "hook", "url": receiver.apprise_url}],
        policies={
            "critical": {"steps": [{"after": "0s", "channels": ["hook"]}]},
            "warning": {"steps": [{"after": "15m", "channels": ["hook"]}]},
        },
    )


def setup(config: EventopsConfig) -> int:
    with session_scope() as session:
        sync_checks(session, config, now=T0)
        return session.scalars(select(Check.id)).one()


def probe(config: EventopsConfig, check_id: int, minute: int, ok: bool) -> None:
    slot = T0 + timedelta(minutes=minute)
    status, code = ("up", 200) if ok else ("down", 503)
    with session_scope() as session:
        record_outcomes(
            session, [ProbeResult(check_id, slot, slot, status, 5.0, code)], config, now=slot
        )


def sweep_at(config: EventopsConfig, at: datetime) -> dict[str, int]:
    return sweep(session_scope, config, now=lambda: at)


def notifications() -> list[Notification]:
    with session_scope() as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def test_a_critical_incident_notifies_once_and_its_resolution_once(
    clean_db: str, receiver: WebhookReceiver
) -> None:
    config = config_for(receiver)
    check_id = setup(config)
    probe(config, check_id, 0, ok=False)
    assert sweep_at(config, T0) == {"queued": 1, "sent": 1, "failed": 0, "postmortems": 0}
    assert sweep_at(config, T0 + timedelta(seconds=5)) == {
        "queued": 0,
        "sent": 0,
        "failed": 0,
        "postmortems": 0,
    }
    assert receiver.titles() == ["[CRITICAL] stripe is down"]
    probe(config, check_id, 1, ok=True)
    sweep_at(config, T0 + timedelta(minutes=1))
    assert receiver.titles() == ["[CRITICAL] stripe is down", "[RESOLVED] stripe is back up"]
    with session_scope() as session:
        incident = session.scalars(select(Incident)).one()
        timeline = session.scalars(select(IncidentEvent.kind).order_by(IncidentEvent.id)).all()
    assert incident.notified_at == T0
    assert timeline == ["opened", "classified", "notified", "resolved", "notified"]


def test_a_warning_that_recovers_within_15_minutes_never_pages(
    clean_db: str, receiver: WebhookReceiver
) -> None:
    config = config_for(receiver, severity="warning")
    check_id = setup(config)
    probe(config, check_id, 0, ok=False)
    sweep_at(config, T0 + timedelta(minutes=14))
    probe(config, check_id, 14, ok=True)
    sweep_at(config, T0 + timedelta(minutes=16))
    assert receiver.attempts == 0
    assert notifications() == []


def test_a_warning_still_failing_after_15_minutes_pages(
    clean_db: str, receiver: WebhookReceiver
) -> None:
    config = config_for(receiver, severity="warning")
    check_id = setup(config)
    probe(config, check_id, 0, ok=False)
    assert sweep_at(config, T0 + timedelta(minutes=14, seconds=59))["sent"] == 0
    assert sweep_at(config, T0 + timedelta(minutes=15))["sent"] == 1
    assert receiver.titles() == ["[WARNING] stripe is down"]


def test_a_failing_channel_is_retried_with_backoff_until_it_delivers_once(
    clean_db: str, receiver: WebhookReceiver
) -> None:
    config = config_for(receiver)
    check_id = setup(config)
    probe(config, check_id, 0, ok=False)
    receiver.failures_left = 2
    assert sweep_at(config, T0)["failed"] == 1
    [note] = notifications()
    assert (note.state, note.attempts, note.next_attempt_at) == ("pending", 1, T0 + retry_delay(1))
    assert note.last_error
    assert sweep_at(config, T0 + timedelta(seconds=29))["failed"] == 0  # backing off
    assert sweep_at(config, T0 + retry_delay(1))["failed"] == 1
    second_retry = T0 + retry_delay(1) + retry_delay(2)
    assert sweep_at(config, second_retry)["sent"] == 1
    assert receiver.titles() == ["[CRITICAL] stripe is down"]
    [note] = notifications()
    assert (note.state, note.attempts, note.sent_at) == ("sent", 3, second_retry)


def test_backoff_doubles_and_is_capped_at_an_hour() -> None:
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert retry_delay(30) == timedelta(hours=1)


def test_a_claimed_notification_is_invisible_to_a_second_sweeper_until_its_lease_ends(
    clean_db: str, receiver: WebhookReceiver
) -> None:
    config = config_for(receiver)
    check_id = setup(config)
    probe(config, check_id, 0, ok=False)
    with session_scope() as session:
        from core.escalation import fire_due_escalations

        fire_due_escalations(session, config, T0)
    with session_scope() as session:
        assert len(claim_notifications(session, T0)) == 1
    with session_scope() as session:
        assert claim_notifications(session, T0 + SEND_LEASE - timedelta(seconds=1)) == []
    with session_scope() as session:
        # The first sender died mid-send: the row comes back; a repeat, never a loss.
        assert len(claim_notifications(session, T0 + SEND_LEASE)) == 1


def test_an_incident_acknowledged_before_its_delay_never_pages(
    clean_db: str, receiver: WebhookReceiver
) -> None:
    config = config_for(receiver, severity="warning")
    check_id = setup(config)
    probe(config, check_id, 0, ok=False)
    with session_scope() as session:
        incident = session.scalars(select(Incident)).one()
        incident.status = "acknowledged"
    sweep_at(config, T0 + timedelta(minutes=20))
    assert receiver.attempts == 0
    with session_scope() as session:
        kinds = session.scalars(select(IncidentEvent.kind)).all()
    assert "escalation skipped" in kinds


def test_a_severity_with_no_route_is_recorded_on_the_timeline_not_dropped(
    clean_db: str, receiver: WebhookReceiver
) -> None:
    config = make_config(
        checks=[
            {"name": "stripe", "url": "http://127.0.0.1:9/", "interval": "1m", "timeout": "5s"}
        ],
        channels=[{"name": "hook", "url": receiver.apprise_url}],
        policies={"warning": {"steps": [{"after": "0s", "channels": ["hook"]}]}},
    )
    check_id = setup(config)
    probe(config, check_id, 0, ok=False)
    sweep_at(config, T0)
    with session_scope() as session:
        event = session.scalars(
            select(IncidentEvent).where(IncidentEvent.kind == "not routed")
        ).one()
    assert event.detail == "the critical policy has no steps"


def test_acknowledging_stops_the_pending_page_and_resolving_by_hand_is_on_the_timeline(
    clean_db: str, receiver: WebhookReceiver
) -> None:
    from core import incidents

    config = config_for(receiver, severity="warning")
    check_id = setup(config)
    probe(config, check_id, 0, ok=False)
    with session_scope() as session:
        incident_id = session.scalars(select(Incident.id)).one()
    assert incidents.acknowledge(incident_id, by="ana", now=T0)
    assert not incidents.acknowledge(incident_id, by="ana", now=T0)
    sweep_at(config, T0 + timedelta(minutes=20))
    assert receiver.attempts == 0
    assert incidents.resolve(incident_id, "ana", config, now=T0 + timedelta(minutes=21))
    with pytest.raises(incidents.IncidentNotFound):
        incidents.acknowledge(999, by="ana")
    with session_scope() as session:
        timeline = session.execute(
            select(IncidentEvent.kind, IncidentEvent.actor).order_by(IncidentEvent.id)
        ).all()
    assert [tuple(row) for row in timeline] == [
        ("opened", "eventops"),
        ("classified", "eventops"),
        ("acknowledged", "ana"),
        ("escalation skipped", "eventops"),
        ("resolved", "ana"),
    ]


def test_a_page_still_retrying_when_its_incident_resolves_is_withdrawn(
    clean_db: str, receiver: WebhookReceiver
) -> None:
    config = config_for(receiver)
    check_id = setup(config)
    probe(config, check_id, 0, ok=False)
    receiver.failures_left = 1
    assert sweep_at(config, T0)["failed"] == 1
    probe(config, check_id, 1, ok=True)  # recovered before the retry
    sweep_at(config, T0 + timedelta(minutes=2))
    assert receiver.received == []
    [note] = notifications()
    assert note.state == "cancelled"
    assert note.last_error == "withdrawn: every incident it carries resolved"
