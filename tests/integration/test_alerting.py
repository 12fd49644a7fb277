"""Alerting end to end: grouping, silences, maintenance windows, promotion, escalation chains,
reminders, digests, retries with fallbacks, channel incidents, the communication plan and
email. Real Postgres, real Apprise to real local receivers, and an injected clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from core import incidents
from core.clock import utcnow
from core.escalation import ClaimedNotification, retry_delay, send, sweep
from core.incidents import Problem, raise_problem
from core.notify import Delivery
from core.pipeline import record_outcomes
from core.probing import ProbeResult
from core.schedule import sync_checks
from core.silences import create_silence, expire_silence, matches, muted_until, silenced
from models.config import EventopsConfig, parse_config
from models.db import session_scope
from models.tables import Check, Escalation, Incident, IncidentEvent, Notification, Silence
from tests.receivers import WebhookReceiver
from tests.smtp_receiver import SmtpReceiver

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
NZ = ZoneInfo("Pacific/Auckland")

# --- helpers -------------------------------------------------------------------------------


@pytest.fixture
def hooks() -> Iterator[Callable[[], WebhookReceiver]]:
    """Start as many real webhook receivers as a test asks for; all stop at its end."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(WebhookReceiver())


def check(name: str, group: str | None = None, severity: str = "critical") -> dict[str, Any]:
    return {
        "name": name,
        "url": "http://127.0.0.1:9/",
        "interval": "1m",
        "timeout": "5s",
        "severity": severity,
        "recovery_threshold": 1,
        **({"group": group} if group else {}),
    }


def config_with(
    channels: dict[str, str | dict[str, Any]],
    policies: dict[str, Any],
    checks: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> EventopsConfig:
    """A config from channel name -> Apprise URL (or a full channel mapping)."""
    return parse_config(
        {
            "platform_url": "http://127.0.0.1:9",
            "checks": checks if checks is not None else [check("stripe")],
            "channels": [
                {"name": name, **(spec if isinstance(spec, dict) else {"url": spec})}
                for name, spec in channels.items()
            ],
            "policies": policies,
            **extra,
        }
    )


def setup_checks(config: EventopsConfig) -> dict[str, int]:
    with session_scope() as session:
        sync_checks(session, config, now=T0)
        return {name: id_ for id_, name in session.execute(select(Check.id, Check.name))}


def insert_checks(names: list[str], group: str) -> list[int]:
    """Many checks in one multi-row insert (sync_checks writes one row per statement)."""
    rows = [
        {
            "name": name,
            "url": "http://127.0.0.1:9/",
            "expected_status": [200],
            "interval_s": 60.0,
            "timeout_s": 5.0,
            "max_body_bytes": 1024,
            "alert_threshold": 1,
            "recovery_threshold": 1,
            "severity": "critical",
            "group_name": group,
            "depends_on": [],
            "next_due_at": T0,
        }
        for name in names
    ]
    with session_scope() as session:
        return list(session.scalars(insert(Check).values(rows).returning(Check.id)))


def probe(config: EventopsConfig, check_ids: list[int], at: datetime, ok: bool) -> None:
    status, code = ("up", 200) if ok else ("down", 503)
    with session_scope() as session:
        record_outcomes(
            session,
            [ProbeResult(check_id, at, at, status, 5.0, code) for check_id in check_ids],
            config,
            now=at,
        )


def sweep_at(config: EventopsConfig, at: datetime) -> dict[str, int]:
    """One sweeper pass at `at`: its queued/sent/failed counts (other counts left out)."""
    result = sweep(session_scope, config, now=lambda: at)
    return {key: result[key] for key in ("queued", "sent", "failed")}


def incident_id(fingerprint: str) -> int:
    with session_scope() as session:
        return session.scalars(select(Incident.id).where(Incident.fingerprint == fingerprint)).one()


def get_incident(id_: int) -> Incident:
    with session_scope() as session:
        incident = session.get(Incident, id_)
        assert incident is not None
        return incident


def timeline(id_: int) -> list[str]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(IncidentEvent.kind)
                .where(IncidentEvent.incident_id == id_)
                .order_by(IncidentEvent.id)
            )
        )


def outbox() -> list[Notification]:
    with session_scope() as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def messages(receiver: WebhookReceiver) -> list[str]:
    return [r.get("message", "") for r in receiver.received]


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def simple_config(hook: WebhookReceiver, **extra: Any) -> EventopsConfig:
    return config_with(
        {"hook": hook.apprise_url},
        {"critical": {"steps": [{"after": "0s", "channels": ["hook"]}]}},
        **extra,
    )


# --- 1. grouping (R5) ----------------------------------------------------------------------


def test_a_thousand_failures_in_one_group_send_one_message_per_channel(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    first, second = hooks(), hooks()
    config = config_with(
        {"first": first.apprise_url, "second": second.apprise_url},
        {
            "critical": {
                "steps": [{"after": "0s", "channels": ["first", "second"]}],
                "group_wait": "5s",
            }
        },
    )
    ids = insert_checks([f"api-{n:04d}" for n in range(1000)], group="api")
    # Ten batches of a hundred, arriving over 2.7 s, as ten probe tasks would deliver them.
    for batch in range(10):
        at = T0 + timedelta(milliseconds=300 * batch)
        probe(config, ids[batch * 100 : (batch + 1) * 100], at, ok=False)

    assert sweep_at(config, T0 + timedelta(seconds=4, milliseconds=999))["sent"] == 0
    assert sweep_at(config, T0 + timedelta(seconds=5)) == {"queued": 2, "sent": 2, "failed": 0}
    assert sweep_at(config, T0 + timedelta(seconds=8)) == {"queued": 0, "sent": 0, "failed": 0}

    for receiver in (first, second):
        assert receiver.titles() == ["[CRITICAL] 1000 problems in group=api"]
        [body] = messages(receiver)
        listed = [line for line in body.splitlines() if line.startswith("- #")]
        assert len(listed) == 50
        assert "- ... and 950 more" in body
        assert "api-0000 is down" in body
    assert sorted(n.channel for n in outbox()) == ["first", "second"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 1000
        assert (
            session.scalar(
                select(func.count()).select_from(Incident).where(Incident.notified_at.is_(None))
            )
            == 0
        )


def test_failures_in_two_groups_send_one_message_per_group_per_channel(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    first, second = hooks(), hooks()
    config = config_with(
        {"first": first.apprise_url, "second": second.apprise_url},
        {
            "critical": {
                "steps": [{"after": "0s", "channels": ["first", "second"]}],
                "group_wait": "5s",
            }
        },
        checks=[check(f"api-{n}", group="api") for n in range(3)]
        + [check(f"db-{n}", group="db") for n in range(2)],
    )
    ids = setup_checks(config)
    probe(config, [ids["api-0"], ids["db-0"]], T0, ok=False)
    probe(config, [ids["api-1"], ids["api-2"], ids["db-1"]], T0 + timedelta(seconds=2), False)
    sweep_at(config, T0 + timedelta(seconds=5))
    sweep_at(config, T0 + timedelta(seconds=10))
    for receiver in (first, second):
        assert sorted(receiver.titles()) == [
            "[CRITICAL] 2 problems in group=db",
            "[CRITICAL] 3 problems in group=api",
        ]
    assert len(outbox()) == 4


# --- 2. silences ---------------------------------------------------------------------------


def test_an_active_silence_holds_the_page_until_it_ends_then_pages_once(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    hook = hooks()
    config = simple_config(hook)
    ids = setup_checks(config)
    with session_scope() as session:
        create_silence(session, ["check=stripe"], by="ana", duration=timedelta(hours=1), now=T0)
    probe(config, [ids["stripe"]], T0, ok=False)
    sweep_at(config, T0)
    sweep_at(config, T0 + minutes(30))
    sweep_at(config, T0 + minutes(59))
    assert hook.attempts == 0
    id_ = incident_id("check:stripe")
    assert get_incident(id_).status == "open"
    assert "silenced" in timeline(id_)

    sweep_at(config, T0 + minutes(60))
    sweep_at(config, T0 + minutes(61))
    assert hook.titles() == ["[CRITICAL] stripe is down"]


def test_an_incident_resolved_during_its_silence_never_pages(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    hook = hooks()
    config = simple_config(hook)
    ids = setup_checks(config)
    with session_scope() as session:
        create_silence(session, ["check=stripe"], by="ana", duration=timedelta(hours=1), now=T0)
    probe(config, [ids["stripe"]], T0, ok=False)
    sweep_at(config, T0)
    probe(config, [ids["stripe"]], T0 + minutes(10), ok=True)
    sweep_at(config, T0 + minutes(61))
    assert hook.attempts == 0
    assert get_incident(incident_id("check:stripe")).status == "resolved"


def test_a_silence_for_another_check_does_not_hold_the_page(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    hook = hooks()
    config = simple_config(hook)
    ids = setup_checks(config)
    with session_scope() as session:
        create_silence(session, ["check=mapbox"], by="ana", duration=timedelta(hours=1), now=T0)
    probe(config, [ids["stripe"]], T0, ok=False)
    sweep_at(config, T0)
    assert hook.titles() == ["[CRITICAL] stripe is down"]


def test_a_silence_expired_before_the_page_is_due_does_not_hold_it(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    hook = hooks()
    config = simple_config(hook)
    ids = setup_checks(config)
    with session_scope() as session:
        silence = create_silence(
            session, ["check=stripe"], by="ana", duration=timedelta(hours=1), now=T0
        )
    with session_scope() as session:
        assert expire_silence(session, silence.id, now=T0 + minutes(5))
        assert not expire_silence(session, silence.id, now=T0 + minutes(6))  # already over
    probe(config, [ids["stripe"]], T0 + minutes(10), ok=False)
    sweep_at(config, T0 + minutes(10))
    assert hook.titles() == ["[CRITICAL] stripe is down"]


def test_expiring_a_silence_early_releases_the_page_it_held(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    hook = hooks()
    config = simple_config(hook)
    ids = setup_checks(config)
    with session_scope() as session:
        silence = create_silence(
            session, ["check=stripe"], by="ana", duration=timedelta(hours=4), now=T0
        )
    probe(config, [ids["stripe"]], T0, ok=False)
    sweep_at(config, T0)
    assert hook.attempts == 0
    with session_scope() as session:
        expire_silence(session, silence.id, now=T0 + minutes(10))
    sweep_at(config, T0 + minutes(10))
    sweep_at(config, T0 + minutes(11))
    assert hook.titles() == ["[CRITICAL] stripe is down"]


def test_regex_silence_holds_matching_groups_only(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    hook = hooks()
    config = simple_config(
        hook, checks=[check("stripe", group="payments"), check("mapbox", group="maps")]
    )
    ids = setup_checks(config)
    with session_scope() as session:
        create_silence(session, ["group=~pay.*"], by="ana", duration=timedelta(hours=1), now=T0)
    probe(config, [ids["stripe"]], T0, ok=False)
    probe(config, [ids["mapbox"]], T0 + timedelta(seconds=1), ok=False)
    sweep_at(config, T0 + timedelta(seconds=1))
    assert hook.titles() == ["[CRITICAL] mapbox is down"]
    sweep_at(config, T0 + minutes(60))
    assert hook.titles() == ["[CRITICAL] mapbox is down", "[CRITICAL] stripe is down"]


def test_negative_silence_holds_everything_except_what_it_names(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    hook = hooks()
    config = simple_config(
        hook, checks=[check("stripe", group="payments"), check("mapbox", group="maps")]
    )
    ids = setup_checks(config)
    with session_scope() as session:
        create_silence(session, ["group!=payments"], by="ana", duration=timedelta(hours=1), now=T0)
    probe(config, [ids["stripe"], ids["mapbox"]], T0, ok=False)
    sweep_at(config, T0)
    assert hook.titles() == ["[CRITICAL] stripe is down"]


def test_matchers_follow_alertmanager_semantics() -> None:
    labels = {"check": "stripe", "group": "payments", "severity": "critical"}
    assert matches(["check=stripe"], labels)
    assert not matches(["check=strip"], labels)
    assert matches(["group=~pay.*"], labels)
    assert not matches(["group=~pay"], labels)  # anchored: the whole value must match
    assert matches(["group!~db.*", "check!=mapbox"], labels)
    assert not matches(["group!~pay.*"], labels)
    assert not matches(["check=stripe", "severity=warning"], labels)  # every matcher holds
    assert matches(["region="], labels)  # a missing label is ''
    assert not matches(["region!="], labels)
    with pytest.raises(ValueError, match="not a matcher"), session_scope() as session:
        create_silence(session, ["check stripe"], by="ana", duration=timedelta(hours=1))


# --- 3. maintenance windows ----------------------------------------------------------------

# Sunday 29 Nov 2026, 02:00-04:00 in Auckland (NZDT, UTC+13) = Sat 28 Nov 13:00-15:00 UTC.
WINDOW_START = datetime(2026, 11, 29, 2, 0, tzinfo=NZ)
WINDOW_END = datetime(2026, 11, 29, 4, 0, tzinfo=NZ)


def window_config(hook: WebhookReceiver) -> EventopsConfig:
    return simple_config(
        hook,
        checks=[check("postgres", group="db"), check("stripe", group="payments")],
        maintenance_windows=[
            {
                "name": "db-upgrade",
                "matchers": ["group=db"],
                "day": "sunday",
                "start": "02:00",
                "duration": "2h",
            }
        ],
    )


def test_the_maintenance_window_is_read_in_the_config_time_zone() -> None:
    assert WINDOW_START.astimezone(UTC) == datetime(2026, 11, 28, 13, 0, tzinfo=UTC)
    assert WINDOW_END.astimezone(UTC) == datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


def test_a_maintenance_window_mutes_pages_inside_it_and_releases_them_at_its_end(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    hook = hooks()
    config = window_config(hook)
    assert config.timezone == "Pacific/Auckland"
    ids = setup_checks(config)
    inside = WINDOW_START.astimezone(UTC) + minutes(30)  # 02:30 local
    probe(config, [ids["postgres"], ids["stripe"]], inside, ok=False)
    sweep_at(config, inside)
    # Only the group the window names is muted.
    assert hook.titles() == ["[CRITICAL] stripe is down"]
    sweep_at(config, WINDOW_END.astimezone(UTC) - timedelta(seconds=1))
    assert hook.titles() == ["[CRITICAL] stripe is down"]
    sweep_at(config, WINDOW_END.astimezone(UTC))
    assert hook.titles() == ["[CRITICAL] stripe is down", "[CRITICAL] postgres is down"]


def test_a_maintenance_window_does_not_mute_outside_it(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    hook = hooks()
    config = window_config(hook)
    ids = setup_checks(config)
    before = WINDOW_START.astimezone(UTC) - minutes(1)  # Sunday 01:59 local
    probe(config, [ids["postgres"]], before, ok=False)
    sweep_at(config, before)
    assert hook.titles() == ["[CRITICAL] postgres is down"]
    with session_scope() as session:
        labels = {"group": "db"}
        assert muted_until(session, labels, config, before) is None
        assert muted_until(session, labels, config, WINDOW_START.astimezone(UTC)) == WINDOW_END
        assert muted_until(session, labels, config, WINDOW_END.astimezone(UTC)) is None
        # Same wall-clock time on the Saturday: not the window's day.
        saturday = datetime(2026, 11, 28, 2, 30, tzinfo=NZ).astimezone(UTC)
        assert muted_until(session, labels, config, saturday) is None


# --- 4. the silenced() context manager ------------------------------------------------------


def test_silenced_block_mutes_inside_and_unmutes_after(clean_db: str) -> None:
    config = parse_config({})
    labels = {"check": "stripe"}
    with (
        silenced(["check=stripe"], by="backup-job", comment="restore drill") as silence_id,
        session_scope() as session,
    ):
        silence = session.get(Silence, silence_id)
        assert silence is not None
        assert silence.starts_at <= utcnow() < silence.ends_at
        assert (silence.created_by, silence.comment) == ("backup-job", "restore drill")
        assert muted_until(session, labels, config, utcnow()) is not None
    with session_scope() as session:
        silence = session.get(Silence, silence_id)
        assert silence is not None
        assert silence.ends_at <= utcnow()
        assert muted_until(session, labels, config, utcnow()) is None


def test_silenced_block_unmutes_when_its_body_raises(clean_db: str) -> None:
    class JobFailed(Exception):
        pass

    with (
        pytest.raises(JobFailed),
        silenced(["check=stripe"], by="backup-job", comment="vacuum") as silence_id,
    ):
        raise JobFailed("vacuum failed")
    with session_scope() as session:
        silence = session.get(Silence, silence_id)
        assert silence is not None
        assert silence.ends_at <= utcnow()


# --- 5. promotion --------------------------------------------------------------------------


def promotion_config(warn: WebhookReceiver, crit: WebhookReceiver) -> EventopsConfig:
    return config_with(
        {"warn": warn.apprise_url, "crit": crit.apprise_url},
        {
            "warning": {"steps": [{"after": "15m", "channels": ["warn"]}], "promote_after": "1h"},
            "critical": {"steps": [{"after": "0s", "channels": ["crit"]}]},
        },
        checks=[check("stripe", severity="warning")],
    )


def test_a_warning_still_open_after_an_hour_is_promoted_to_critical(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    warn, crit = hooks(), hooks()
    config = promotion_config(warn, crit)
    ids = setup_checks(config)
    probe(config, [ids["stripe"]], T0, ok=False)
    sweep_at(config, T0 + minutes(15))
    assert warn.titles() == ["[WARNING] stripe is down"]
    sweep_at(config, T0 + minutes(59))
    assert crit.attempts == 0
    sweep_at(config, T0 + minutes(60))
    sweep_at(config, T0 + minutes(60) + timedelta(seconds=5))  # the next sweeper tick
    assert crit.titles() == ["[CRITICAL PROMOTED] stripe is down"]
    assert warn.titles() == ["[WARNING] stripe is down"]
    incident = get_incident(incident_id("check:stripe"))
    assert incident.severity == "critical"
    assert incident.labels["severity"] == "critical"
    assert incident.promoted_at == T0 + minutes(60)
    assert "promoted" in timeline(incident.id)


@pytest.mark.parametrize("handled", ["acknowledged", "resolved"])
def test_a_handled_warning_is_not_promoted(
    clean_db: str, hooks: Callable[[], WebhookReceiver], handled: str
) -> None:
    warn, crit = hooks(), hooks()
    config = promotion_config(warn, crit)
    ids = setup_checks(config)
    probe(config, [ids["stripe"]], T0, ok=False)
    sweep_at(config, T0 + minutes(15))
    id_ = incident_id("check:stripe")
    if handled == "acknowledged":
        assert incidents.acknowledge(id_, "ana", now=T0 + minutes(20))
    else:
        assert incidents.resolve(id_, "ana", config, now=T0 + minutes(20))
    for at in (60, 61, 120):
        sweep_at(config, T0 + minutes(at))
    assert crit.attempts == 0
    incident = get_incident(id_)
    assert (incident.severity, incident.promoted_at) == ("warning", None)
    assert "promoted" not in timeline(id_)


# --- 6. chain and reminders ----------------------------------------------------------------


def test_the_chain_escalates_reminds_until_acknowledged_and_resolves_to_all_told(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    a, b = hooks(), hooks()
    config = config_with(
        {"a": a.apprise_url, "b": b.apprise_url},
        {
            "critical": {
                "steps": [
                    {"after": "0s", "channels": ["a"]},
                    {"after": "15m", "channels": ["b"]},
                ],
                "repeat_every": "30m",
            }
        },
    )
    ids = setup_checks(config)
    probe(config, [ids["stripe"]], T0, ok=False)
    sweep_at(config, T0)
    assert (a.titles(), b.titles()) == (["[CRITICAL] stripe is down"], [])
    sweep_at(config, T0 + minutes(15) - timedelta(seconds=1))
    assert b.attempts == 0
    sweep_at(config, T0 + minutes(15))
    assert b.titles() == ["[CRITICAL] stripe is down"]
    sweep_at(config, T0 + minutes(44))
    assert len(b.titles()) == 1
    sweep_at(config, T0 + minutes(45))
    sweep_at(config, T0 + minutes(75))
    reminder = "[CRITICAL REMINDER] stripe is down"
    assert b.titles() == ["[CRITICAL] stripe is down", reminder, reminder]
    assert "Still unacknowledged after 75 min." in messages(b)[-1]

    id_ = incident_id("check:stripe")
    assert incidents.acknowledge(id_, "ana", now=T0 + minutes(80))
    for at in (105, 135, 165):
        sweep_at(config, T0 + minutes(at))
    assert len(b.titles()) == 3
    assert a.titles() == ["[CRITICAL] stripe is down"]

    assert incidents.resolve(id_, "ana", config, now=T0 + minutes(170))
    sweep_at(config, T0 + minutes(170))
    assert a.titles()[-1] == b.titles()[-1] == "[RESOLVED] stripe is back up"
    assert (len(a.titles()), len(b.titles())) == (2, 4)


# --- 7. daily digest -----------------------------------------------------------------------


def test_info_incidents_wait_for_one_daily_digest_and_are_not_repeated(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    d = hooks()
    config = config_with(
        {"d": d.apprise_url},
        {"info": {"digest": True, "channels": ["d"]}},
        notifications={"digest_at": "09:00"},
    )

    def info(name: str, at: datetime) -> None:
        with session_scope() as session:
            problem = Problem(
                fingerprint=f"kpi:{name}",
                title=f"{name} is low",
                severity="info",
                summary=f"{name} dropped",
                labels={"group": "kpi"},
            )
            assert raise_problem(session, problem, config, at) is not None

    # Friday 27 Nov in Auckland; the digest is Saturday 28 Nov 09:00 NZDT = Fri 20:00 UTC.
    day = datetime(2026, 11, 27, tzinfo=NZ)
    digest = datetime(2026, 11, 28, 9, 0, tzinfo=NZ).astimezone(UTC)
    assert digest == datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    for name, hour in (("signups", 10), ("bookings", 14), ("revenue", 21)):
        at = (day + timedelta(hours=hour)).astimezone(UTC)
        info(name, at)
        sweep_at(config, at)
    sweep_at(config, digest - timedelta(seconds=1))
    assert d.attempts == 0

    sweep_at(config, digest)
    sweep_at(config, digest + timedelta(seconds=5))
    [title] = d.titles()
    assert title.startswith("[DIGEST] 3 info alerts")
    [body] = messages(d)
    for name in ("signups", "bookings", "revenue"):
        assert f"{name} is low" in body

    info("churn", digest + timedelta(hours=2))
    next_digest = digest + timedelta(days=1)
    sweep_at(config, next_digest)
    assert len(d.titles()) == 2
    assert d.titles()[1].startswith("[DIGEST] 1 info alert ")
    assert "churn is low" in messages(d)[1]
    assert "signups" not in messages(d)[1]


# --- 8. outbox retry and fallback (R7) -----------------------------------------------------


def test_a_failing_channel_falls_back_after_three_attempts_and_still_delivers_once(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    primary, backup = hooks(), hooks()
    config = config_with(
        {
            "primary": {"url": primary.apprise_url, "fallback": "backup"},
            "backup": backup.apprise_url,
        },
        {"critical": {"steps": [{"after": "0s", "channels": ["primary"]}]}},
        notifications={"fallback_after": 3, "channel_incident_after": 10},
    )
    ids = setup_checks(config)
    probe(config, [ids["stripe"]], T0, ok=False)
    primary.failures_left = 5

    at = T0
    sweep_at(config, at)  # attempt 1 fails
    at += retry_delay(1)
    assert sweep_at(config, at - timedelta(seconds=1))["failed"] == 0  # backing off
    sweep_at(config, at)  # attempt 2 fails
    assert backup.attempts == 0
    at += retry_delay(2)
    sweep_at(config, at)  # attempt 3 fails: a copy is queued for the fallback
    sweep_at(config, at + timedelta(seconds=5))  # the next tick delivers the copy
    assert backup.titles() == ["[CRITICAL] stripe is down"]
    assert primary.attempts == 3
    at += retry_delay(3)
    sweep_at(config, at)  # attempt 4 fails
    at += retry_delay(4)
    sweep_at(config, at)  # attempt 5 fails
    assert primary.received == []
    at += retry_delay(5)
    sweep_at(config, at)  # attempt 6 delivers
    for later in (1, 10, 60):
        sweep_at(config, at + minutes(later))

    assert primary.titles() == ["[CRITICAL] stripe is down"]
    assert primary.attempts == 6
    assert backup.titles() == ["[CRITICAL] stripe is down"]
    assert backup.attempts == 1
    notes = {n.channel: n for n in outbox()}
    assert (notes["primary"].state, notes["primary"].attempts) == ("sent", 6)
    assert notes["backup"].fallback_for == notes["primary"].id
    events = timeline(incident_id("check:stripe"))
    assert events.count("notification failed") == 5
    assert events.count("fallback") == 1
    assert events.count("notified") == 2
    assert events.index("notification failed") < events.index("fallback")
    assert events.index("fallback") < events.index("notified")


def test_the_resolution_reaches_the_fallback_channel_that_carried_the_page(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    primary, backup = hooks(), hooks()
    config = config_with(
        {
            "primary": {"url": primary.apprise_url, "fallback": "backup"},
            "backup": backup.apprise_url,
        },
        {"critical": {"steps": [{"after": "0s", "channels": ["primary"]}]}},
        notifications={"fallback_after": 3, "channel_incident_after": 100},
    )
    ids = setup_checks(config)
    probe(config, [ids["stripe"]], T0, ok=False)
    primary.failures_left = 1000  # down for the whole incident
    at = T0
    for attempt in (1, 2, 3):
        sweep_at(config, at)
        at += retry_delay(attempt)
    sweep_at(config, at)  # delivers the fallback copy
    assert backup.titles() == ["[CRITICAL] stripe is down"]
    probe(config, [ids["stripe"]], at + minutes(1), ok=True)
    sweep_at(config, at + minutes(1))
    sweep_at(config, at + minutes(2))
    # The people who were paged (through backup) hear that it is over.
    assert backup.titles() == ["[CRITICAL] stripe is down", "[RESOLVED] stripe is back up"]


# --- 9. a channel's own incident -----------------------------------------------------------


def test_a_channel_failing_three_times_opens_its_own_incident_that_pages_elsewhere(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    flaky, pager = hooks(), hooks()
    config = config_with(
        {"flaky": flaky.apprise_url, "pager": pager.apprise_url},
        {"critical": {"steps": [{"after": "0s", "channels": ["flaky", "pager"]}]}},
        notifications={"channel_incident_after": 3},
    )
    ids = setup_checks(config)
    probe(config, [ids["stripe"]], T0, ok=False)
    flaky.failures_left = 4

    sweep_at(config, T0)  # flaky fails (1), pager gets the page
    sweep_at(config, T0 + retry_delay(1))  # (2)
    with session_scope() as session:
        assert (
            session.scalars(
                select(Incident.id).where(Incident.fingerprint == "channel:flaky")
            ).all()
            == []
        )
    third = T0 + retry_delay(1) + retry_delay(2)
    sweep_at(config, third)  # (3): the channel's own incident opens
    channel_incident = get_incident(incident_id("channel:flaky"))
    assert channel_incident.severity == "critical"
    assert channel_incident.title == "notification channel flaky is failing"
    assert channel_incident.status == "open"

    sweep_at(config, third + timedelta(seconds=5))  # routed like any critical
    assert pager.titles() == [
        "[CRITICAL] stripe is down",
        "[CRITICAL] notification channel flaky is failing",
    ]
    assert get_incident(channel_incident.id).status == "open"  # flaky failed a 4th time

    # flaky recovers: its next delivery resolves its incident, and those told hear it.
    for seconds in range(0, 600, 30):
        sweep_at(config, third + timedelta(seconds=5 + seconds))
    assert get_incident(channel_incident.id).status == "resolved"
    assert pager.titles()[-1].startswith("[RESOLVED] notification channel flaky")
    assert pager.titles().count("[CRITICAL] notification channel flaky is failing") == 1
    assert flaky.titles().count("[CRITICAL] stripe is down") == 1


def test_an_incident_that_recovers_while_its_page_is_in_flight_still_announces_its_end(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    hook = hooks()
    config = simple_config(hook)
    ids = setup_checks(config)
    probe(config, [ids["stripe"]], T0, ok=False)

    def slow_send(config: EventopsConfig, note: ClaimedNotification) -> Delivery:
        # The sweeper holds no transaction while it sends; the pipeline runs meanwhile.
        if note.kind == "opened":
            probe(config, [ids["stripe"]], T0 + timedelta(seconds=1), ok=True)
        return send(config, note)

    sweep(session_scope, config, now=lambda: T0 + timedelta(seconds=1), sender=slow_send)
    assert get_incident(incident_id("check:stripe")).status == "resolved"
    assert hook.titles() == ["[CRITICAL] stripe is down"]
    sweep_at(config, T0 + timedelta(seconds=5))
    sweep_at(config, T0 + minutes(1))
    assert hook.titles() == ["[CRITICAL] stripe is down", "[RESOLVED] stripe is back up"]


# --- 10. communication plan ----------------------------------------------------------------


def comms_config(oncall: WebhookReceiver, status: WebhookReceiver) -> EventopsConfig:
    return config_with(
        {"oncall": oncall.apprise_url, "status": status.apprise_url},
        {
            "critical": {
                "steps": [{"after": "0s", "channels": ["oncall"]}],
                "stakeholders": ["status"],
            }
        },
    )


def test_stakeholders_hear_the_opening_public_updates_and_the_resolution(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    oncall, status = hooks(), hooks()
    config = comms_config(oncall, status)
    ids = setup_checks(config)
    probe(config, [ids["stripe"]], T0, ok=False)
    sweep_at(config, T0)
    assert status.titles() == ["[CRITICAL INCIDENT] stripe is down"]
    assert oncall.titles() == ["[CRITICAL] stripe is down"]

    id_ = incident_id("check:stripe")
    incidents.note(id_, "Looking at the Stripe dashboard", "ana", config, now=T0 + minutes(5))
    sweep_at(config, T0 + minutes(5))
    assert len(status.titles()) == 1  # a private note tells nobody

    incidents.note(id_, "Rolled back deploy", "ana", config, public=True, now=T0 + minutes(10))
    sweep_at(config, T0 + minutes(10))
    assert status.titles()[1] == "[UPDATE] stripe is down"
    assert "Rolled back deploy" in messages(status)[1]

    probe(config, [ids["stripe"]], T0 + minutes(20), ok=True)
    sweep_at(config, T0 + minutes(20))
    assert status.titles() == [
        "[CRITICAL INCIDENT] stripe is down",
        "[UPDATE] stripe is down",
        "[RESOLVED] stripe is back up",
    ]
    assert oncall.titles() == ["[CRITICAL] stripe is down", "[RESOLVED] stripe is back up"]


def test_a_public_note_on_an_acknowledged_incident_reaches_stakeholders(
    clean_db: str, hooks: Callable[[], WebhookReceiver]
) -> None:
    oncall, status = hooks(), hooks()
    config = comms_config(oncall, status)
    ids = setup_checks(config)
    probe(config, [ids["stripe"]], T0, ok=False)
    sweep_at(config, T0)
    id_ = incident_id("check:stripe")
    assert incidents.acknowledge(id_, "ana", now=T0 + minutes(2))
    incidents.note(id_, "Rolled back deploy", "ana", config, public=True, now=T0 + minutes(10))
    sweep_at(config, T0 + minutes(10))
    assert status.titles() == ["[CRITICAL INCIDENT] stripe is down", "[UPDATE] stripe is down"]


# --- 11. email over real SMTP --------------------------------------------------------------


def test_a_page_arrives_as_an_email_whose_subject_is_the_title(clean_db: str) -> None:
    with SmtpReceiver() as smtp:
        config = config_with(
            {"mail": smtp.apprise_url},
            {"critical": {"steps": [{"after": "0s", "channels": ["mail"]}]}},
        )
        ids = setup_checks(config)
        probe(config, [ids["stripe"]], T0, ok=False)
        assert sweep_at(config, T0)["sent"] == 1
        assert smtp.subjects() == ["[CRITICAL] stripe is down"]
        [mail] = smtp.received
        assert (mail["From"], mail["To"]) == ("eventops@example.test", "ops@example.test")
        assert "stripe is down" in smtp.bodies()[0]


def test_an_smtp_temporary_failure_is_retried_and_delivers_one_email(clean_db: str) -> None:
    with SmtpReceiver() as smtp:
        smtp.failures_left = 1  # 451 for the first delivery
        config = config_with(
            {"mail": smtp.apprise_url},
            {"critical": {"steps": [{"after": "0s", "channels": ["mail"]}]}},
        )
        ids = setup_checks(config)
        probe(config, [ids["stripe"]], T0, ok=False)
        assert sweep_at(config, T0) == {"queued": 1, "sent": 0, "failed": 1}
        [note] = outbox()
        assert (note.state, note.attempts) == ("pending", 1)
        assert note.last_error
        assert smtp.received == []
        assert sweep_at(config, T0 + retry_delay(1))["sent"] == 1
        sweep_at(config, T0 + minutes(10))
        assert smtp.subjects() == ["[CRITICAL] stripe is down"]
        assert smtp.attempts == 2
        with session_scope() as session:
            pending = session.scalar(
                select(func.count()).select_from(Escalation).where(Escalation.state == "pending")
            )
        assert pending == 0


def test_an_email_page_keeps_one_line_per_incident(clean_db: str) -> None:
    with SmtpReceiver() as smtp:
        config = config_with(
            {"mail": smtp.apprise_url},
            {"critical": {"steps": [{"after": "0s", "channels": ["mail"]}]}},
            checks=[check("stripe", group="payments"), check("paypal", group="payments")],
        )
        ids = setup_checks(config)
        probe(config, [ids["stripe"], ids["paypal"]], T0, ok=False)
        sweep_at(config, T0)
        assert smtp.subjects() == ["[CRITICAL] 2 problems in group=payments"]
        lines = smtp.bodies()[0].splitlines()
        assert any(line.startswith("- #1 stripe is down") for line in lines)
        assert any(line.startswith("- #2 paypal is down") for line in lines)
