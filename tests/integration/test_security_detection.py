"""Security detection against the demo platform's generated traffic, on real Postgres: each
planted attack is found with the right severity and evidence, honest users are left alone."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select, text

from core.backups.tools import Conn
from core.security import runner
from core.security.sources import ingest
from demo import platform_db
from demo.platform_db import apply_schema, generate
from models import db
from models.config import EventopsConfig
from models.db import session_scope
from models.security import SecurityBan, SecurityEvent, SecurityFinding
from models.tables import Base, Incident, IncidentEvent
from tests.conftest import make_config

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
DAYS = 30
SCALE = 0.1
ATTACKER_NETS = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24")]
DETECTORS = ("failed_logins", "api_abuse", "data_access", "signatures")


@pytest.fixture(scope="module")
def platform(postgres_server_url: str) -> Iterator[Conn]:
    """The demo platform database, generated once for the module at a small scale."""
    server = Conn.from_url(postgres_server_url)
    name = f"eventops_platform_{uuid.uuid4().hex[:10]}"
    with server.connect() as db:
        db.execute(f'CREATE DATABASE "{name}"')
    conn = server.with_db(name)
    apply_schema(conn)
    generate(conn, scale=SCALE, seed=7, days=DAYS, now=NOW)
    yield conn
    with server.connect() as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def shipped_security(repo_root: Path) -> dict[str, Any]:
    data = yaml.safe_load((repo_root / "config" / "eventops.yaml").read_text())
    section: dict[str, Any] = data["security"]
    return section


@pytest.fixture(scope="module")
def config() -> EventopsConfig:
    """The shipped config's security section (the demo queries) on the test config."""
    return make_config(security=shipped_security(Path(__file__).resolve().parents[2]))


def truncate() -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with db.get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def detect_everything(config: EventopsConfig, platform: Conn) -> dict[str, Any]:
    """Read every event of the window and run every detector over the whole of it."""
    summary: dict[str, Any] = {}
    with session_scope() as session:
        summary["sources"] = ingest(session, list(config.security.sources), platform, NOW)
    for name in DETECTORS:
        with session_scope() as session:
            summary[name] = runner.run_detector(
                session, config, name, NOW, since=NOW - timedelta(days=DAYS + 1)
            )
    return summary


@pytest.fixture(scope="module")
def detected(database_url: str, config: EventopsConfig, platform: Conn) -> dict[str, Any]:
    """Everything detected once for the module's read-only tests (detection is the slow
    part); the tests that change state come last and start from an empty database."""
    db.configure(database_url)
    truncate()
    return detect_everything(config, platform)


def findings(**where: Any) -> list[SecurityFinding]:
    with session_scope() as session:
        query = select(SecurityFinding).order_by(SecurityFinding.id)
        for column, value in where.items():
            query = query.where(getattr(SecurityFinding, column) == value)
        return list(session.scalars(query))


def bans(**where: Any) -> list[SecurityBan]:
    with session_scope() as session:
        query = select(SecurityBan).order_by(SecurityBan.id)
        for column, value in where.items():
            query = query.where(getattr(SecurityBan, column) == value)
        return list(session.scalars(query))


def test_sources_read_every_row_once_and_then_only_new_ones(
    detected: dict[str, Any], config: EventopsConfig, platform: Conn
) -> None:
    counts = platform_db.row_counts(platform)
    sources = detected["sources"]
    assert sources["auth"]["stored"] == counts["auth_events"]
    assert sources["api"]["stored"] == counts["api_requests"]
    assert sources["access"]["stored"] == counts["data_access_log"]
    with session_scope() as session:
        again = ingest(session, list(config.security.sources), platform, NOW)
    assert {name: s["read"] for name, s in again.items()} == {"auth": 0, "api": 0, "access": 0}
    with platform.connect() as db:
        db.execute(
            "INSERT INTO auth_events (user_id, email, ip, user_agent, kind, at)"
            " VALUES (NULL, 'late@example.test', '100.64.9.9', 'curl', 'login_failure', %s)",
            (NOW,),
        )
    try:
        with session_scope() as session:
            late = ingest(session, list(config.security.sources), platform, NOW)
            stored = session.scalar(
                select(func.count()).where(SecurityEvent.account == "late@example.test")
            )
        assert late["auth"] == {"read": 1, "stored": 1}
        assert stored == 1
    finally:
        with platform.connect() as db:
            db.execute("DELETE FROM auth_events WHERE email = 'late@example.test'")


def test_brute_force_on_one_account_bans_the_ip_as_a_warning(detected: dict[str, Any]) -> None:
    (finding,) = findings(subject=f"ip:{platform_db.BRUTE_FORCE_IP}")
    assert finding.kind == "brute_force"
    assert finding.severity == "warning"
    assert finding.evidence["accounts_in_window"] == 1
    assert finding.evidence["failures"] == platform_db.BRUTE_FORCE_ATTEMPTS
    assert finding.evidence["user_agents"] == ["python-requests/2.31.0"]
    (ban,) = bans(value=platform_db.BRUTE_FORCE_IP)
    assert ban.kind == "ip"
    assert ban.until - ban.banned_at == timedelta(hours=1)


def test_credential_stuffing_from_one_ip_bans_the_ip_not_the_accounts(
    detected: dict[str, Any],
) -> None:
    (finding,) = findings(subject=f"ip:{platform_db.STUFFING_IP}")
    assert finding.kind == "credential_stuffing"
    assert finding.severity == "critical"
    assert finding.evidence["accounts"] == platform_db.STUFFING_ATTEMPTS
    assert finding.evidence["successes"] == 0
    (ban,) = bans(value=platform_db.STUFFING_IP)
    assert ban.kind == "ip"
    stuffed = set(finding.evidence["sample_accounts"])
    assert not [b for b in bans(kind="account") if b.value in stuffed]


def test_distributed_attack_on_one_account_locks_the_account(detected: dict[str, Any]) -> None:
    (finding,) = findings(kind="distributed_attack")
    assert finding.severity == "critical"
    assert finding.evidence["distinct_ips"] >= 5
    account = finding.subject.removeprefix("account:")
    (ban,) = bans(kind="account")
    assert ban.value == account
    assert ban.until - ban.banned_at == timedelta(minutes=30)
    # No single IP of the many made enough guesses to be banned itself.
    assert not [b for b in bans(kind="ip") if b.value.startswith("203.0.113.1")]


def test_no_honest_user_in_the_generated_traffic_is_banned(detected: dict[str, Any]) -> None:
    banned_ips = [ipaddress.ip_address(b.value) for b in bans(kind="ip")]
    assert banned_ips
    assert all(any(ip in net for net in ATTACKER_NETS) for ip in banned_ips)
    assert platform_db.SHARED_NAT_IP not in {b.value for b in bans()}
    assert not findings(subject=f"ip:{platform_db.SHARED_NAT_IP}")


def test_api_enumeration_is_found_with_the_ids_it_walked(detected: dict[str, Any]) -> None:
    found = findings(subject=f"ip:{platform_db.ENUMERATION_IP}", detector="api_abuse")
    assert found
    kinds = {k for f in found for k in f.evidence["kinds"]}
    assert "enumeration" in kinds
    assert all(f.severity == "warning" for f in found)
    walked = [
        e
        for f in found
        for e in (f.evidence, f.evidence.get("enumeration", {}))
        if "distinct_ids" in e
    ]
    assert walked and walked[0]["prefix"] == "/api/vendors/"
    assert sum(e["distinct_ids"] for e in walked) >= platform_db.ENUMERATION_REQUESTS // 2


def test_sql_injection_xss_and_traversal_probes_are_found_from_the_scanner(
    detected: dict[str, Any],
) -> None:
    found = findings(subject=f"ip:{platform_db.SCANNER_IP}", detector="signatures")
    assert found
    hit: dict[str, int] = {}
    for finding in found:
        for name, count in finding.evidence["signatures"].items():
            hit[name] = hit.get(name, 0) + count
        # Every probe was refused (4xx): a warning, not a breach.
        assert finding.severity == "warning"
    assert hit["sql_injection"] >= 6
    assert hit["xss"] >= 4
    assert hit["path_traversal"] >= 3
    assert hit["recon"] >= 4
    agents = {a for f in found for a in f.evidence["agents"]}
    assert any("sqlmap" in a for a in agents) and any("Nikto" in a for a in agents)
    # Nobody else's requests look like attacks.
    others = {f.subject for f in findings(detector="signatures")} - {f"ip:{platform_db.SCANNER_IP}"}
    assert others == set()


def test_admin_bulk_export_at_3am_is_a_critical_breach_finding(detected: dict[str, Any]) -> None:
    (finding,) = [f for f in findings(detector="data_access") if "bulk_read" in f.evidence["kinds"]]
    assert finding.severity == "critical"
    assert finding.evidence["role"] == "admin"
    assert finding.evidence["rows"] >= platform_db.BULK_EXPORTS / 2
    assert "users:export" in finding.evidence["what"]
    assert "unusual_hours" in finding.evidence["kinds"]
    local = datetime.fromisoformat(finding.evidence["first_at"]).astimezone(
        __import__("zoneinfo").ZoneInfo("Pacific/Auckland")
    )
    assert local.hour == 3


def test_breach_findings_open_a_data_breach_incident_for_the_notification_clock(
    detected: dict[str, Any],
) -> None:
    (finding,) = [f for f in findings(detector="data_access") if "bulk_read" in f.evidence["kinds"]]
    with session_scope() as session:
        incident = session.get(Incident, finding.incident_id)
        assert incident is not None
        assert incident.fingerprint.startswith("security:breach:data_access:account:")
        assert incident.labels["category"] == "data_breach"
        assert incident.severity == "critical"
        # The signature and login incidents are security incidents, not breaches.
        others = session.scalars(
            select(Incident).where(~Incident.fingerprint.startswith("security:breach:"))
        ).all()
    assert others and all(i.labels["category"] == "security" for i in others)


def test_each_finding_raises_one_incident_per_detector_and_subject(
    detected: dict[str, Any],
) -> None:
    with session_scope() as session:
        incidents = list(session.scalars(select(Incident).where(Incident.category == "security")))
    by_fingerprint = {i.fingerprint: i for i in incidents}
    assert len(by_fingerprint) == len(incidents)
    stuffing = by_fingerprint[f"security:failed_logins:ip:{platform_db.STUFFING_IP}"]
    assert stuffing.severity == "critical"
    assert stuffing.labels["detector"] == "failed_logins"
    assert all(f.incident_id is not None for f in findings())


def test_every_ban_is_an_incident_event_with_its_evidence(detected: dict[str, Any]) -> None:
    with session_scope() as session:
        events = list(session.scalars(select(IncidentEvent).where(IncidentEvent.kind == "ban")))
    all_bans = bans()
    assert len(events) == len(all_bans)
    (event,) = [e for e in events if platform_db.BRUTE_FORCE_IP in (e.detail or "")]
    assert '"failures": 30' in (event.detail or "")


def test_rerun_over_the_same_window_adds_no_finding(
    detected: dict[str, Any], config: EventopsConfig, platform: Conn
) -> None:
    before = (len(findings()), len(bans()))
    with session_scope() as session:
        incidents = session.scalar(select(func.count()).select_from(Incident))
    detect_everything(config, platform)
    assert (len(findings()), len(bans())) == before
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == incidents


def test_the_tick_carries_on_from_where_each_detector_stopped(
    clean_db: str, config: EventopsConfig, platform: Conn
) -> None:
    first = runner.tick(session_scope, config, platform, NOW - timedelta(days=1))
    assert first["sources"]["auth"]["read"] > 0
    second = runner.tick(session_scope, config, platform, NOW)
    assert second["failed_logins"]["since"] == first["failed_logins"]["until"]
    assert second["api_abuse"]["since"] == first["api_abuse"]["until"]
