"""Error patterns from ingested logs: grouping, new/recurring/regressed, burst incidents."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from core.logs.ingest import ingest_all
from core.logs.patterns import analyze, fingerprint_for, normalize, resolve_pattern
from models.config import EventopsConfig
from models.db import session_scope
from models.logs import ErrorPattern
from models.tables import Incident
from tests.conftest import make_config

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            "Payment pi_3N8xYzAbc12345 failed for user 4f1c2b7e-9a0d-4e5f-8a1b-2c3d4e5f6a7b",
            "Payment pi_9Q1wErTyu67890 failed for user 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        ),
        (
            "mail to jane@example.test bounced (550)",
            "mail to bob.smith@mail.example.org bounced (421)",
        ),
        (
            "cannot open /srv/uploads/2026/11/photo_8812.jpg",
            "cannot open /srv/uploads/2025/01/banner.png",
        ),
        (
            "GET https://api.stripe.com/v1/charges/ch_1 timed out after 30.5s",
            "GET https://api.mapbox.com/geocoding/v5?q=x timed out after 2s",
        ),
        ("connection to 10.0.0.12:5432 refused", "connection to 192.168.1.4:6543 refused"),
        ("refund of cus_NffrFeUfNV2Hib failed", "refund of cus_QkxPbnmWzzabcdef failed"),
        ("lock 0xdeadbeef held by tx a3f9c21e77b0", "lock 0x1f held by tx 0b9e77f1c2d4"),
    ],
)
def test_messages_that_differ_only_in_variable_parts_share_a_fingerprint(
    first: str, second: str
) -> None:
    assert normalize(first) == normalize(second)
    assert fingerprint_for("application", "api", first) == fingerprint_for(
        "application", "api", second
    )


def test_different_errors_or_services_get_different_fingerprints() -> None:
    assert normalize("payment failed") != normalize("payment refunded")
    assert fingerprint_for("application", "api", "boom") != fingerprint_for(
        "application", "worker", "boom"
    )


def _write_errors(path: Path, start: datetime, count: int, message: str, every_s: float) -> None:
    with path.open("a") as handle:
        for n in range(count):
            document = {
                "timestamp": (start + timedelta(seconds=n * every_s)).isoformat(),
                "level": "error",
                "service": "checkout",
                "message": message.format(id=uuid.uuid4(), n=n),
            }
            handle.write(json.dumps(document) + "\n")


def _config(log: Path, **patterns: object) -> EventopsConfig:
    return make_config(
        logs={
            "sources": [{"name": "app", "kind": "application", "path": str(log)}],
            "patterns": {"burst_count": 10, "burst_window": "5m", **patterns},
        }
    )


def _run(config: EventopsConfig, now: datetime) -> dict[str, object]:
    ingest_all(session_scope, config.logs, now)
    with session_scope() as session:
        return analyze(session, config, now)


def test_new_recurring_and_regressed_are_counted(clean_db: str, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    config = _config(log, quiet_period="7d")
    # Two patterns, slow enough to never burst.
    _write_errors(log, T0, 3, "card {id} declined", every_s=600)
    _write_errors(log, T0, 2, "stock for item {n} negative", every_s=600)
    first = _run(config, T0 + timedelta(hours=1))
    assert (first["new"], first["recurring"], first["regressed"], first["entries"]) == (2, 0, 0, 5)

    _write_errors(log, T0 + timedelta(hours=2), 1, "card {id} declined", every_s=1)
    second = _run(config, T0 + timedelta(hours=3))
    assert (second["new"], second["recurring"], second["regressed"]) == (0, 1, 0)

    # Resolved by a person, then seen again: regressed.
    fingerprint = fingerprint_for("application", "checkout", f"card {uuid.uuid4()} declined")
    with session_scope() as session:
        assert resolve_pattern(session, fingerprint, config, by="sam", now=T0 + timedelta(hours=4))
    _write_errors(log, T0 + timedelta(hours=5), 1, "card {id} declined", every_s=1)
    # And the other pattern comes back after more than the quiet period: regressed too.
    _write_errors(log, T0 + timedelta(days=9), 1, "stock for item {n} negative", every_s=1)
    third = _run(config, T0 + timedelta(days=9, hours=1))
    assert (third["new"], third["recurring"], third["regressed"]) == (0, 0, 2)
    with session_scope() as session:
        patterns = {p.template: p for p in session.scalars(select(ErrorPattern))}
    card = patterns["card <uuid> declined"]
    assert (card.status, card.classification, card.regressions, card.occurrences) == (
        "active",
        "regressed",
        1,
        5,
    )
    # No burst anywhere: no incident.
    assert third["incidents_opened"] == 0


def test_a_new_pattern_burst_opens_one_incident_that_resolves_when_quiet(
    clean_db: str, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    config = _config(log, resolve_after="1h")
    # 9 in 5 minutes is not a burst; the 10th within the window is.
    _write_errors(log, T0, 9, "webhook {id} signature invalid", every_s=30)
    assert _run(config, T0 + timedelta(minutes=5))["incidents_opened"] == 0
    _write_errors(log, T0 + timedelta(seconds=270), 1, "webhook {id} signature invalid", 1)
    assert _run(config, T0 + timedelta(minutes=6))["incidents_opened"] == 1
    # More of the same: still one incident.
    _write_errors(log, T0 + timedelta(minutes=7), 20, "webhook {id} signature invalid", 1)
    assert _run(config, T0 + timedelta(minutes=8))["incidents_opened"] == 0
    with session_scope() as session:
        incident = session.scalars(select(Incident)).one()
        assert incident.fingerprint.startswith("logs:pattern:")
        assert (incident.severity, incident.status, incident.labels["service"]) == (
            "warning",
            "open",
            "checkout",
        )
        assert "new error burst" in incident.title
    # Quiet for an hour: resolved.
    result = _run(config, T0 + timedelta(hours=2))
    assert result["incidents_resolved"] == 1
    with session_scope() as session:
        assert session.scalars(select(Incident.status)).one() == "resolved"


def test_a_burst_incident_carries_the_template_not_a_raw_line_with_personal_data(
    clean_db: str, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    config = _config(log)
    _write_errors(log, T0, 12, "login for jane.doe@example.test failed: {id}", every_s=5)
    assert _run(config, T0 + timedelta(minutes=2))["incidents_opened"] == 1
    with session_scope() as session:
        incident = session.scalars(select(Incident)).one()
    assert "login for <email> failed: <uuid>" in incident.summary
    assert "jane.doe" not in incident.summary and "jane.doe" not in incident.title


def test_a_slow_old_pattern_never_pages(clean_db: str, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    config = _config(log, new_for="24h")
    _write_errors(log, T0, 3, "cache miss storm {n}", every_s=60)
    _run(config, T0 + timedelta(minutes=10))
    # Two days later a burst of a pattern that is neither new nor regressed: no incident.
    _write_errors(log, T0 + timedelta(days=2), 50, "cache miss storm {n}", every_s=1)
    result = _run(config, T0 + timedelta(days=2, minutes=5))
    assert (result["recurring"], result["incidents_opened"]) == (1, 0)
