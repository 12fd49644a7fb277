"""Post-mortem drafts on real Postgres, from incidents driven through the real lifecycle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.escalation import claim_notifications, fire_due_escalations, record_delivery
from core.incidents import IncidentNotFound, acknowledge, note
from core.notify import Delivery
from core.pipeline import record_outcomes
from core.postmortem import draft_missing_postmortems, draft_postmortem, stamp
from core.probing import ProbeResult
from core.schedule import sync_checks
from models.config import EventopsConfig, parse_config
from models.db import session_scope
from models.tables import Check, Incident, IncidentEvent

T = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
NOTE = "rolled back deploy | v2.3\nwatching the error rate"
SEND_ERROR = "HTTP 502 | bad gateway\nupstream closed"
FILL_IN = ("## Cause", "## What went well", "## What went wrong", "## Follow-ups")


def config() -> EventopsConfig:
    check = {"url": "http://127.0.0.1:9/", "interval": "1m", "timeout": "5s"}
    thresholds = {"alert_threshold": 2, "recovery_threshold": 1}
    return parse_config(
        {
            "platform_url": "http://127.0.0.1:9",
            "checks": [
                {"name": "stripe", **check, **thresholds, "impact": "no card payments"},
                {"name": "checkout", **check, **thresholds, "depends_on": ["stripe"]},
            ],
            "channels": [{"name": "hook", "url": "json://127.0.0.1:9/hook"}],
            "policies": {"critical": {"steps": [{"after": "0s", "channels": ["hook"]}]}},
        }
    )


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def result(check_id: int, minutes: float, ok: bool) -> ProbeResult:
    slot = at(minutes)
    if ok:
        return ProbeResult(check_id, slot, slot, "up", 12.0, 200)
    return ProbeResult(check_id, slot, slot, "down", 40.0, 503, "bad_status", "HTTP 503")


@dataclass(frozen=True)
class Story:
    stripe: int  # the incident: detected, paged (once failed, then sent), acked, resolved
    checkout: int  # its child: suppressed while stripe is down, still open


def story() -> Story:
    """stripe blips at 08:45 (recovers), fails from 09:00, opens 09:01, the page fails once
    and is sent at 09:03, ana acks at 09:05 and notes at 09:10, it resolves at 09:20."""
    cfg = config()

    def feed(minutes: float, *results: ProbeResult) -> list[int]:
        with session_scope() as session:
            return record_outcomes(session, list(results), cfg, now=at(minutes)).opened

    with session_scope() as session:
        sync_checks(session, cfg, now=at(-20))
        ids = dict(session.execute(select(Check.name, Check.id)).all())
    stripe, checkout = ids["stripe"], ids["checkout"]
    feed(-15, result(stripe, -15, False))
    feed(-14, result(stripe, -14, True))
    feed(-1, result(stripe, -1, True))
    assert feed(0, result(stripe, 0, False)) == []
    [incident] = feed(1, result(stripe, 1, False))
    feed(1, result(checkout, 1, False))
    [child] = feed(2, result(checkout, 2, False))

    with session_scope() as session:
        assert fire_due_escalations(session, cfg, now=at(1)) == 1
        [page] = claim_notifications(session, now=at(1))
        record_delivery(session, page, Delivery(False, SEND_ERROR), cfg, now=at(1.5))
    with session_scope() as session:
        [page] = claim_notifications(session, now=at(3))
        record_delivery(session, page, Delivery(True), cfg, now=at(3))
    with session_scope() as session:
        assert acknowledge(incident, by="ana", session=session, now=at(5))
        note(incident, NOTE, "ana", cfg, session=session, now=at(10))
    with session_scope() as session:
        summary = record_outcomes(session, [result(stripe, 20, True)], cfg, now=at(20))
        assert summary.resolved == [incident]
    return Story(incident, child)


def draft(incident_id: int, now: datetime | None = None) -> str:
    with session_scope() as session:
        return draft_postmortem(session, incident_id, now=now or at(60))


def cells(row: str) -> list[str]:
    """A Markdown table row split on its unescaped pipes."""
    assert row.startswith("|") and row.endswith("|"), row
    parts, current, escaped = [], "", False
    for char in row[1:-1]:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            current += char
            escaped = True
        elif char == "|":
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


def section(text: str, heading: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("#")), len(lines))
    return [line for line in lines[start:end] if line]


def table_rows(text: str, heading: str) -> list[list[str]]:
    rows = [cells(line) for line in section(text, heading) if line.startswith("|")]
    return rows[2:]  # past the header and the delimiter


def test_durations_are_exact(clean_db: str) -> None:
    text = draft(story().stripe)
    assert section(text, "## Durations") == [
        "- Time to detect: 60s (first failure 2026-11-27 09:00:00 UTC, "
        "opened 2026-11-27 09:01:00 UTC)",
        "- Time to acknowledge: 4 min (by ana)",
        "- Time to resolve: 19 min",
    ]
    summary = dict((row[0], row[1]) for row in table_rows(text, "## Summary"))
    assert summary["Opened"] == "2026-11-27 09:01:00 UTC"
    assert summary["Acknowledged"] == "2026-11-27 09:05:00 UTC by ana"
    assert summary["Resolved"] == "2026-11-27 09:20:00 UTC"
    assert summary["Impact"] == "no card payments"
    assert summary["Status"] == "resolved"
    assert summary["Flapping"] == "no, 0 reopens"
    assert text.startswith("# Post-mortem: #1 stripe is down\n")


def test_every_timeline_event_appears_in_order_with_its_actor(clean_db: str) -> None:
    ids = story()
    text = draft(ids.stripe)
    with session_scope() as session:
        events = session.scalars(
            select(IncidentEvent)
            .where(IncidentEvent.incident_id == ids.stripe)
            .order_by(IncidentEvent.at, IncidentEvent.id)
        ).all()
        expected = [(stamp(e.at), e.kind, e.actor) for e in events]
    rows = table_rows(text, "## Timeline")
    assert [tuple(row[:3]) for row in rows] == expected
    kinds = [kind for _, kind, _ in expected]
    assert kinds == [
        "opened",
        "classified",
        "notification failed",
        "notified",
        "acknowledged",
        "note",
        "resolved",
    ]
    assert ("2026-11-27 09:05:00 UTC", "acknowledged", "ana") in expected


def test_pipes_and_line_breaks_in_details_keep_every_table_valid(clean_db: str) -> None:
    text = draft(story().stripe)
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        if header is None:
            header = len(cells(line))
        assert len(cells(line)) == header, line
    notes = [row for row in table_rows(text, "## Timeline") if row[1] == "note"]
    assert notes == [
        [
            "2026-11-27 09:10:00 UTC",
            "note",
            "ana",
            "rolled back deploy \\| v2.3<br>watching the error rate",
        ]
    ]
    failed = [row for row in table_rows(text, "## Timeline") if row[1] == "notification failed"]
    assert failed[0][3] == "hook, attempt 1: HTTP 502 \\| bad gateway<br>upstream closed"


def test_notifications_outcomes_and_affected_checks_are_listed(clean_db: str) -> None:
    ids = story()
    text = draft(ids.stripe)
    [page] = table_rows(text, "## Notifications")
    assert page[:6] == [
        "2026-11-27 09:01:00 UTC",
        "hook",
        "opened",
        "sent",
        "2026-11-27 09:03:00 UTC",
        "2",
    ]
    outcomes = section(text, "## Outcomes")
    # 08:31 to 09:20: the 08:45 blip, its recovery, 08:59, two failures, the recovery.
    assert outcomes[0] == (
        "6 outcomes of `stripe` from 2026-11-27 08:31:00 UTC to 2026-11-27 09:20:00 UTC "
        "(down 3, up 3)."
    )
    assert table_rows(text, "## Outcomes") == [["bad_status", "3"]]
    assert outcomes[-1] == (
        "First failing outcome: 2026-11-27 09:00:00 UTC (bad_status, HTTP 503)."
    )
    assert section(text, "## Affected checks") == [
        "- `stripe` (group stripe): this incident's check",
        f"- `checkout`: #{ids.checkout} checkout is down (open), explained by this incident",
    ]
    child = draft(ids.checkout)
    summary = dict((row[0], row[1]) for row in table_rows(child, "## Summary"))
    assert summary["Parent incident"] == f"#{ids.stripe} stripe is down"


def test_fill_in_headings_are_there_and_empty(clean_db: str) -> None:
    text = draft(story().stripe)
    lines = text.splitlines()
    for heading in FILL_IN:
        assert heading in lines
    assert section(text, "## Cause") == []
    assert section(text, "## Follow-ups") == ["- [ ] "]


def test_the_draft_is_deterministic(clean_db: str) -> None:
    ids = story()
    assert draft(ids.stripe, at(60)) == draft(ids.stripe, at(600)) == draft(ids.stripe, at(60))


def test_an_incident_without_outcomes_says_what_raised_it(clean_db: str) -> None:
    with session_scope() as session:
        incident = Incident(
            fingerprint="rule:slow-checkout",
            rule="slow-checkout",
            title="checkout p95 above 2 s",
            severity="warning",
            category="performance",
            status="resolved",
            opened_at=at(0),
            resolved_at=at(90),
        )
        session.add(incident)
        session.flush()
        incident_id = incident.id
    text = draft(incident_id)
    assert section(text, "## Durations") == [
        "- Time to detect: n/a (raised by rule `slow-checkout`)",
        "- Time to acknowledge: not acknowledged",
        "- Time to resolve: 90 min",
    ]
    assert "No notification carried this incident." in text
    assert "## Outcomes" not in text
    for heading in FILL_IN:
        assert heading in text.splitlines()


def test_a_missing_incident_raises(clean_db: str) -> None:
    with session_scope() as session, pytest.raises(IncidentNotFound):
        draft_postmortem(session, 404)


def test_the_sweeper_drafts_settled_resolved_incidents_once(clean_db: str) -> None:
    ids = story()
    with session_scope() as session:
        reviewed = Incident(
            fingerprint="rule:old",
            rule="old",
            title="an old one, already reviewed",
            severity="warning",
            status="resolved",
            opened_at=at(-600),
            resolved_at=at(-500),
            postmortem="written by people",
        )
        session.add(reviewed)
        session.flush()
        reviewed_id = reviewed.id
    with session_scope() as session:
        # Just resolved: it may still reopen within the flap window, so not yet.
        assert draft_missing_postmortems(session, now=at(21)) == []
    with session_scope() as session:
        assert draft_missing_postmortems(session, now=at(60)) == [ids.stripe]
    with session_scope() as session:
        assert draft_missing_postmortems(session, now=at(61)) == []
        rows = {i.id: i for i in session.scalars(select(Incident))}
        assert rows[ids.stripe].postmortem == draft_postmortem(session, ids.stripe, at(60))
        assert rows[ids.checkout].postmortem is None  # still open
        assert rows[reviewed_id].postmortem == "written by people"
        drafted = session.execute(
            select(IncidentEvent.incident_id, IncidentEvent.at).where(
                IncidentEvent.kind == "post-mortem drafted"
            )
        ).all()
        assert [tuple(row) for row in drafted] == [(ids.stripe, at(60))]


def test_two_sweepers_never_draft_the_same_incident(clean_db: str) -> None:
    ids = story()
    with session_scope() as first:
        assert draft_missing_postmortems(first, now=at(60)) == [ids.stripe]
        with session_scope() as second:  # another connection, while the first holds the row
            assert draft_missing_postmortems(second, now=at(60)) == []
    with session_scope() as session:
        events = session.scalars(
            select(IncidentEvent.id).where(IncidentEvent.kind == "post-mortem drafted")
        ).all()
        assert len(events) == 1
