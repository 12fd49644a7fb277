"""The failed-login jails, API and data-access rules, webhooks, unbans and the daily analysis,
on hand-written JSON-lines events (the file source) and real Postgres."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.security import runner
from core.security.daily import daily_analysis
from core.security.sources import ingest
from models.config import EventopsConfig
from models.db import session_scope
from models.security import SecurityBan, SecurityDetectorState, SecurityEvent, SecurityFinding
from models.tables import Incident, IncidentEvent
from tests.conftest import make_config
from tests.receivers import WebhookReceiver

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)  # 14:00 in Auckland (NZDT)
NAT = "192.0.2.10"


def jail_config(tmp_path: Path, **security: Any) -> EventopsConfig:
    sources = [
        {"name": "auth-file", "stream": "auth", "file": str(tmp_path / "auth.jsonl")},
        {
            "name": "api-file",
            "stream": "api",
            "file": str(tmp_path / "api.jsonl"),
            "fields": {"key": "api_key"},
        },
        {
            "name": "access-file",
            "stream": "access",
            "file": str(tmp_path / "access.jsonl"),
            "fields": {"account": "actor", "resource": "table"},
        },
    ]
    return make_config(security={"sources": sources, **security})


def write(path: Path, events: list[dict[str, Any]]) -> None:
    with path.open("a") as handle:
        for event in events:
            handle.write(json.dumps(event, default=str) + "\n")


def login(at: datetime, ip: str, account: str, ok: bool) -> dict[str, Any]:
    return {"at": at.isoformat(), "ip": ip, "account": account,
            "outcome": "success" if ok else "failure", "user_agent": "Mozilla/5.0"}  # fmt: skip


def run(config: EventopsConfig, name: str, now: datetime, since: datetime) -> dict[str, Any]:
    with session_scope() as session:
        ingest(session, list(config.security.sources), None, now)
    with session_scope() as session:
        return runner.run_detector(session, config, name, now, since=since)


def all_bans() -> list[SecurityBan]:
    with session_scope() as session:
        return list(session.scalars(select(SecurityBan).order_by(SecurityBan.banned_at)))


def all_findings() -> list[SecurityFinding]:
    with session_scope() as session:
        return list(session.scalars(select(SecurityFinding).order_by(SecurityFinding.id)))


def test_shared_nat_with_honest_typos_is_never_banned(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    events = []
    # 30 people behind one office NAT within ten minutes, each mistypes twice, then gets in.
    for n in range(30):
        at = T0 + timedelta(seconds=15 * n)
        events += [
            login(at, NAT, f"person{n}@example.test", False),
            login(at + timedelta(seconds=5), NAT, f"person{n}@example.test", False),
            login(at + timedelta(seconds=20), NAT, f"person{n}@example.test", True),
        ]
    write(tmp_path / "auth.jsonl", events)
    run(config, "failed_logins", T0 + timedelta(hours=1), T0 - timedelta(minutes=1))
    assert all_bans() == []
    assert all_findings() == []


def test_attacker_behind_the_same_nat_is_still_banned(clean_db: str, tmp_path: Path) -> None:
    """Honest typos are forgiven; one account hammered from the NAT is not, even if it
    finally gets in (that is a brute force that worked)."""
    config = jail_config(tmp_path)
    events = [login(T0 + timedelta(seconds=5 * i), NAT, "boss@example.test", False)
              for i in range(8)]  # fmt: skip
    events.append(login(T0 + timedelta(seconds=50), NAT, "boss@example.test", True))
    write(tmp_path / "auth.jsonl", events)
    run(config, "failed_logins", T0 + timedelta(hours=1), T0 - timedelta(minutes=1))
    (ban,) = all_bans()
    assert (ban.kind, ban.value) == ("ip", NAT)
    assert ban.evidence["successes"] == 1


def test_fewer_than_maxretry_within_findtime_is_no_ban(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    # Five failures, but spread so that no ten-minute window holds more than four.
    write(tmp_path / "auth.jsonl", [
        login(T0 + timedelta(minutes=3 * i), "203.0.113.9", "a@example.test", False)
        for i in range(5)
    ])  # fmt: skip
    run(config, "failed_logins", T0 + timedelta(hours=1), T0 - timedelta(minutes=1))
    assert all_bans() == []


def test_ignoreip_ranges_are_never_banned(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path, failed_logins={"ignoreip": ["203.0.113.0/24"]})
    write(tmp_path / "auth.jsonl", [
        login(T0 + timedelta(seconds=i), "203.0.113.9", "a@example.test", False)
        for i in range(20)
    ])  # fmt: skip
    run(config, "failed_logins", T0 + timedelta(hours=1), T0 - timedelta(minutes=1))
    assert all_bans() == []


def burst(at: datetime, ip: str, n: int = 6) -> list[dict[str, Any]]:
    return [login(at + timedelta(seconds=i), ip, "victim@example.test", False) for i in range(n)]


def test_repeat_offender_gets_a_longer_ban(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    ip = "203.0.113.7"
    second = T0 + timedelta(hours=2)  # after the first one-hour ban ran out
    write(tmp_path / "auth.jsonl", burst(T0, ip) + burst(second, ip))
    run(config, "failed_logins", T0 + timedelta(hours=1), T0 - timedelta(minutes=1))
    run(config, "failed_logins", second + timedelta(minutes=5), T0 + timedelta(hours=1))
    first_ban, second_ban = all_bans()
    assert first_ban.until - first_ban.banned_at == timedelta(hours=1)
    assert second_ban.until - second_ban.banned_at == timedelta(hours=2)
    assert (first_ban.offence_count, second_ban.offence_count) == (1, 2)


def test_a_huge_bantime_factor_gives_a_repeat_offender_bantime_maxtime_not_an_overflow(
    clean_db: str, tmp_path: Path
) -> None:
    # `config check` accepts any positive factor; bantime * 1e300 was an OverflowError at the
    # second ban, and every tick after it (the detector's window never moved).
    config = jail_config(tmp_path, failed_logins={"bantime_factor": 1e300})
    ip = "203.0.113.9"
    second = T0 + timedelta(hours=2)
    write(tmp_path / "auth.jsonl", burst(T0, ip) + burst(second, ip))
    run(config, "failed_logins", T0 + timedelta(hours=1), T0 - timedelta(minutes=1))
    run(config, "failed_logins", second + timedelta(minutes=5), T0 + timedelta(hours=1))
    _, second_ban = all_bans()
    assert second_ban.until - second_ban.banned_at == config.security.failed_logins.bantime_maxtime


def test_failures_during_a_ban_do_not_ban_again(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    ip = "203.0.113.8"
    write(tmp_path / "auth.jsonl", burst(T0, ip) + burst(T0 + timedelta(minutes=20), ip))
    run(config, "failed_logins", T0 + timedelta(hours=1), T0 - timedelta(minutes=1))
    assert len(all_bans()) == 1


def test_fifth_ban_in_a_day_is_a_recidive_ban_of_a_week(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path, failed_logins={"bantime": "10m", "bantime_increment": False})
    ip = "203.0.113.5"
    starts = [T0 + timedelta(minutes=30 * i) for i in range(5)]
    write(tmp_path / "auth.jsonl", [e for s in starts for e in burst(s, ip)])
    run(config, "failed_logins", T0 + timedelta(hours=3), T0 - timedelta(minutes=1))
    bans = all_bans()
    assert [b.jail for b in bans] == ["failed_logins"] * 4 + ["recidive"]
    assert bans[-1].until - bans[-1].banned_at == timedelta(weeks=1)
    (finding,) = [f for f in all_findings() if f.kind == "recidive"]
    assert finding.evidence["offence_count"] == 5


def test_ban_webhook_gets_the_ban_and_the_unban(clean_db: str, tmp_path: Path) -> None:
    with WebhookReceiver() as receiver:
        url = receiver.apprise_url.replace("json://", "http://")
        config = jail_config(tmp_path, failed_logins={"webhook_url": url})
        receiver.failures_left = 1  # the first delivery fails and is retried on the next tick
        write(tmp_path / "auth.jsonl", burst(T0, "203.0.113.4"))
        run(config, "failed_logins", T0 + timedelta(hours=1), T0 - timedelta(minutes=1))
        assert runner.deliver_webhooks(session_scope, config) == {"sent": 0, "failed": 1}
        assert runner.deliver_webhooks(session_scope, config) == {"sent": 1, "failed": 0}
        with session_scope() as session:
            lifted = runner.unban(
                session, config, "203.0.113.4", "ip", "alice", T0 + timedelta(minutes=5)
            )
        assert runner.deliver_webhooks(session_scope, config) == {"sent": 1, "failed": 0}
        assert [r["event"] for r in receiver.received] == ["ban", "unban"]
        assert receiver.received[0]["value"] == "203.0.113.4"
        assert receiver.received[0]["evidence"]["failures"] == 6
    assert len(lifted) == 1
    (ban,) = all_bans()
    assert ban.lifted_by == "alice"
    with session_scope() as session:
        kinds = list(session.scalars(
            select(IncidentEvent.kind).where(IncidentEvent.incident_id == ban.incident_id)
            .order_by(IncidentEvent.id)
        ))  # fmt: skip
    assert "ban" in kinds and kinds[-1] == "unban"


class LockProbingReceiver:
    """A webhook that, while it answers, tries to lock every ban row with NOWAIT from a
    connection of its own: it succeeds only if the sender holds no lock on them."""

    def __init__(self, database_url: str) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import psycopg

        dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
        self.locked_while_answering: list[bool] = []
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with psycopg.connect(dsn) as conn:
                    try:
                        conn.execute("SELECT id FROM security_bans FOR UPDATE NOWAIT")
                        probe.locked_while_answering.append(False)
                    except psycopg.errors.LockNotAvailable:
                        probe.locked_while_answering.append(True)
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/bans"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_ban_webhook_is_posted_with_no_transaction_holding_the_bans(
    clean_db: str, tmp_path: Path
) -> None:
    receiver = LockProbingReceiver(clean_db)
    try:
        config = jail_config(tmp_path, failed_logins={"webhook_url": receiver.url})
        write(tmp_path / "auth.jsonl", burst(T0, "203.0.113.4") + burst(T0, "203.0.113.5"))
        run(config, "failed_logins", T0 + timedelta(hours=1), T0 - timedelta(minutes=1))
        assert runner.deliver_webhooks(session_scope, config) == {"sent": 2, "failed": 0}
    finally:
        receiver.close()
    assert receiver.locked_while_answering == [False, False]
    assert {b.webhook_state for b in all_bans()} == {"sent"}
    assert runner.deliver_webhooks(session_scope, config) == {"sent": 0, "failed": 0}


def request(
    at: datetime, ip: str, path: str, status: int, key: str | None = None
) -> dict[str, Any]:
    return {"at": at.isoformat(), "ip": ip, "api_key": key, "method": "GET", "path": path,
            "status": status, "user_agent": "Mozilla/5.0"}  # fmt: skip


def test_request_rate_far_above_a_keys_own_baseline_is_abuse(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    events = []
    # A partner key: about 30 requests every 5 minutes for two days is its normal...
    for b in range(576):
        at = T0 + timedelta(minutes=5 * b)
        events += [request(at + timedelta(seconds=9 * i), f"100.64.0.{i % 3 + 1}", "/api/vendors",
                           200, key="partner") for i in range(28 + b % 5)]  # fmt: skip
    # ...then it scrapes 400 in five minutes.
    spike = T0 + timedelta(days=2, minutes=10)
    events += [request(spike + timedelta(milliseconds=700 * i), "100.64.0.1", "/api/vendors", 200,
                       key="partner") for i in range(400)]  # fmt: skip
    write(tmp_path / "api.jsonl", events)
    run(config, "api_abuse", spike + timedelta(hours=1), T0)
    flagged = [f for f in all_findings() if f.kind == "request_rate"]
    assert [f.subject for f in flagged if f.subject == "key:partner"] == ["key:partner"]
    (finding,) = [f for f in flagged if f.subject == "key:partner"]
    assert finding.window_start == spike
    assert finding.evidence["requests"] == 400
    # About 30, less the two quiet buckets before the spike.
    assert 20 < finding.evidence["baseline_mean"] < 35


def test_burst_of_401_403_429_is_found(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    write(tmp_path / "api.jsonl", [
        request(T0 + timedelta(seconds=i), "203.0.113.30", "/api/bookings", (401, 403, 429)[i % 3])
        for i in range(25)
    ])  # fmt: skip
    run(config, "api_abuse", T0 + timedelta(hours=1), T0)
    (finding,) = all_findings()
    assert "auth_error_burst" in finding.evidence["kinds"]
    assert finding.severity == "warning"


def access(at: datetime, actor: str, role: str, table: str, action: str) -> dict[str, Any]:
    return {"at": at.isoformat(), "actor": actor, "role": role, "table": table,
            "action": action}  # fmt: skip


def test_access_outside_a_roles_permissions_is_critical(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(
        tmp_path,
        data_access={
            "permissions": {"vendor": {"users": ["read"], "events": ["read"]}},
            "unusual_hours_roles": [],
        },
    )
    write(tmp_path / "access.jsonl", [
        access(T0, "v1", "vendor", "users", "read"),
        access(T0 + timedelta(minutes=1), "v1", "vendor", "payments", "read"),
        access(T0 + timedelta(minutes=2), "v2", "customer", "payments", "read"),  # not judged
    ])  # fmt: skip
    run(config, "data_access", T0 + timedelta(hours=2), T0 - timedelta(hours=1))
    (finding,) = all_findings()
    assert finding.subject == "account:v1"
    assert finding.severity == "critical"
    assert finding.evidence["table"] == "payments" and finding.evidence["action"] == "read"


def test_new_network_for_an_admin_login_is_a_warning(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    events = [dict(login(T0 + timedelta(days=d), "100.64.1.1", "root@example.test", True),
                   role="admin") for d in range(3)]  # fmt: skip
    events.append(dict(login(T0 + timedelta(days=3), "100.99.7.7", "root@example.test", True),
                       role="admin"))  # fmt: skip
    write(tmp_path / "auth.jsonl", events)
    run(config, "data_access", T0 + timedelta(days=4), T0 - timedelta(hours=1))
    (finding,) = all_findings()
    assert finding.kind == "new_network"
    assert finding.severity == "warning"
    assert finding.evidence["network"] == "100.99.0.0/16"


def test_bad_lines_are_reported_with_field_and_reason_and_the_rest_are_read(
    clean_db: str, tmp_path: Path
) -> None:
    config = jail_config(tmp_path)
    path = tmp_path / "auth.jsonl"
    write(path, [login(T0, "100.64.0.1", "a@example.test", True)])
    with path.open("a") as handle:
        handle.write("not json\n")
        handle.write(json.dumps({"at": T0.isoformat(), "ip": "999.1.1.1", "account": "b",
                                 "outcome": "failure"}) + "\n")  # fmt: skip
        handle.write(json.dumps({"at": "yesterday", "account": "c", "outcome": "failure"}) + "\n")
    write(path, [login(T0, "100.64.0.2", "d@example.test", True)])
    with session_scope() as session:
        summary = ingest(session, list(config.security.sources), None, T0)
    assert summary["auth-file"]["read"] == 5
    assert summary["auth-file"]["stored"] == 2
    assert summary["auth-file"]["rejected"] == 3
    with session_scope() as session:
        state = session.get(SecurityDetectorState, "source:auth-file")
        assert state is not None
        errors = state.details["recent_errors"]
    assert any("ip: '999.1.1.1' is not an IP address" in e for e in errors)
    assert any("at: not an ISO 8601 time" in e for e in errors)


def test_a_query_source_with_a_null_id_is_an_error_and_the_other_sources_still_run(
    clean_db: str, tmp_path: Path
) -> None:
    from core.backups.tools import Conn

    config = jail_config(tmp_path)
    no_id = {
        "name": "auth-query",
        "stream": "auth",
        "query": "SELECT NULL::bigint AS id, now() AS at, 'a@example.test' AS account, "
        "'failure' AS outcome",
    }
    sources = [no_id, *(s.model_dump(mode="json") for s in config.security.sources)]
    config = make_config(security={"sources": sources})
    write(tmp_path / "auth.jsonl", [login(T0, "100.64.0.1", "a@example.test", True)])
    with session_scope() as session:
        summary = ingest(session, list(config.security.sources), Conn.from_url(clean_db), T0)
    assert "column 'id' is missing or NULL" in summary["auth-query"]["error"]
    assert summary["auth-file"]["stored"] == 1


def test_poison_lines_are_rejected_one_by_one_and_the_good_ones_stored(
    clean_db: str, tmp_path: Path
) -> None:
    """Epoch seconds out of range or NaN, a row count past a Postgres integer, a NUL in an
    attacker's path: each was an exception (or a failed COPY) that stopped every tick."""
    config = jail_config(tmp_path)
    auth = tmp_path / "auth.jsonl"
    with auth.open("w") as handle:
        handle.write('{"at": 1e20, "account": "a", "outcome": "failure"}\n')
        handle.write('{"at": NaN, "account": "a", "outcome": "failure"}\n')
    write(auth, [login(T0, "100.64.0.1", "a@example.test", True)])
    write(tmp_path / "access.jsonl", [
        {"at": T0.isoformat(), "actor": "x", "table": "users", "action": "select", "rows": 1e30},
        {"at": T0.isoformat(), "actor": "x", "table": "users", "action": "select",
         "rows": 2**40},
    ])  # fmt: skip
    write(tmp_path / "api.jsonl", [request(T0, "203.0.113.70", "/api/x\u0000.php", 404)])
    with session_scope() as session:
        summary = ingest(session, list(config.security.sources), None, T0)
    assert (summary["auth-file"]["stored"], summary["auth-file"]["rejected"]) == (1, 2)
    assert (summary["access-file"]["stored"], summary["access-file"]["rejected"]) == (0, 2)
    assert summary["api-file"]["stored"] == 1
    with session_scope() as session:
        paths = session.scalars(
            select(SecurityEvent.path).where(SecurityEvent.stream == "api")
        ).all()
    assert paths == ["/api/x\\x00.php"]


def test_a_query_source_runs_read_only_under_a_statement_timeout(
    clean_db: str, tmp_path: Path
) -> None:
    from core.backups.tools import Conn

    settings = {
        "name": "auth-query",
        "stream": "auth",
        "query": "SELECT 1 AS id, now() AS at, 'failure' AS outcome, "
        "current_setting('statement_timeout') || '/' || current_setting('transaction_read_only')"
        " AS account",
    }
    config = make_config(security={"sources": [settings]})
    with session_scope() as session:
        summary = ingest(session, list(config.security.sources), Conn.from_url(clean_db), T0)
    assert summary["auth-query"]["stored"] == 1
    with session_scope() as session:
        (account,) = session.scalars(select(SecurityEvent.account)).all()
    assert account == "1min/on"


def test_a_half_written_line_waits_for_its_end(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    path = tmp_path / "auth.jsonl"
    line = json.dumps(login(T0, "100.64.0.1", "a@example.test", True))
    path.write_text(line[:20])
    with session_scope() as session:
        assert ingest(session, list(config.security.sources), None, T0)["auth-file"]["read"] == 0
    path.write_text(line + "\n")
    with session_scope() as session:
        assert ingest(session, list(config.security.sources), None, T0)["auth-file"]["stored"] == 1


def test_daily_analysis_counts_the_days_findings_and_bans(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    write(tmp_path / "auth.jsonl", burst(T0, "203.0.113.3"))
    run(config, "failed_logins", T0 + timedelta(hours=1), T0 - timedelta(minutes=1))
    with session_scope() as session:
        markdown, figures = daily_analysis(session, config, date(2026, 11, 20), T0)
    assert figures["bans"][0]["value"] == "203.0.113.3"
    assert figures["logins"]["failures"] == 6
    assert "| failed_logins | warning | 1 |" in markdown
    assert "`ip:203.0.113.3`" in markdown
    with session_scope() as session:
        markdown_again, _ = daily_analysis(session, config, date(2026, 11, 20), T0)
        incidents = list(session.scalars(select(Incident)))
    assert markdown_again == markdown
    assert len(incidents) == 1


def test_the_tick_reads_judges_and_prunes_events_past_keep_events(
    clean_db: str, tmp_path: Path
) -> None:
    config = jail_config(tmp_path, keep_events="30d")
    write(tmp_path / "auth.jsonl", [
        login(T0 - timedelta(days=40), "100.64.0.1", "old@example.test", True),
        *burst(T0, "203.0.113.2"),
    ])  # fmt: skip
    summary = runner.tick(session_scope, config, None, T0 + timedelta(minutes=5))
    assert summary["sources"]["auth-file"] == {"read": 7, "stored": 7}
    assert summary["failed_logins"]["bans"] == 1
    assert summary["pruned"] == 1
    again = runner.tick(session_scope, config, None, T0 + timedelta(minutes=5))
    assert again["sources"]["auth-file"] == {"read": 0, "stored": 0}
    assert again["failed_logins"] == {"window": None}


def test_many_distinct_404_paths_are_enumeration(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    write(tmp_path / "api.jsonl", [
        request(T0 + timedelta(seconds=2 * i), "203.0.113.40", f"/api/files/report-{i}.pdf", 404)
        for i in range(25)
    ])  # fmt: skip
    run(config, "api_abuse", T0 + timedelta(hours=1), T0)
    (finding,) = all_findings()
    assert finding.kind == "enumeration"
    assert finding.evidence["not_found_paths"] == 25


def test_an_injection_the_platform_answered_2xx_is_critical(clean_db: str, tmp_path: Path) -> None:
    config = jail_config(tmp_path)
    write(tmp_path / "api.jsonl", [
        request(T0, "203.0.113.50", "/api/search?q=%27%20OR%201%3D1--", 200),
        request(T0 + timedelta(seconds=1), "203.0.113.51", "/api/search?q=<script>x</script>", 400),
        request(T0 + timedelta(seconds=2), "100.64.3.3", "/api/search?q=photo+booth", 200),
    ])  # fmt: skip
    run(config, "signatures", T0 + timedelta(hours=2), T0 - timedelta(hours=1))
    by_subject = {f.subject: f for f in all_findings()}
    assert set(by_subject) == {"ip:203.0.113.50", "ip:203.0.113.51"}
    assert by_subject["ip:203.0.113.50"].severity == "critical"
    assert by_subject["ip:203.0.113.50"].evidence["signatures"] == {"sql_injection": 1}
    assert by_subject["ip:203.0.113.51"].severity == "warning"
    assert by_subject["ip:203.0.113.51"].kind == "xss"


def test_a_refused_injection_next_to_a_catch_all_200_is_not_critical(
    clean_db: str, tmp_path: Path
) -> None:
    """The platform refused the injection (403); its single-page app answered the recon path
    200. No attack succeeded: a warning, not a critical page."""
    config = jail_config(tmp_path)
    ip = "203.0.113.61"
    write(tmp_path / "api.jsonl", [
        request(T0, ip, "/api/search?q=%27%20OR%201%3D1--", 403),
        request(T0 + timedelta(seconds=1), ip, "/wp-admin/", 200),
    ])  # fmt: skip
    run(config, "signatures", T0 + timedelta(hours=2), T0 - timedelta(hours=1))
    (finding,) = all_findings()
    assert finding.severity == "warning"
    assert finding.evidence["succeeded"] == 0


def test_a_critical_finding_raises_the_open_incident_it_joins_and_pages(
    clean_db: str, tmp_path: Path
) -> None:
    """A recon probe opens a warning incident for the IP; the injection the platform answered
    2xx in the next bucket joins it: the incident becomes critical, paged under that policy."""
    from models.tables import Escalation

    config = jail_config(tmp_path)
    ip = "203.0.113.60"
    write(tmp_path / "api.jsonl", [request(T0, ip, "/.env", 404)])
    run(config, "signatures", T0 + timedelta(hours=2), T0 - timedelta(hours=1))
    assert [f.severity for f in all_findings()] == ["warning"]
    later = T0 + timedelta(hours=1, minutes=30)  # the next (hour) bucket
    write(tmp_path / "api.jsonl", [request(later, ip, "/api/search?q=%27%20OR%201%3D1--", 200)])
    run(config, "signatures", T0 + timedelta(hours=3), T0 + timedelta(hours=1))
    assert [f.severity for f in all_findings()] == ["warning", "critical"]
    with session_scope() as session:
        (incident,) = session.scalars(select(Incident))
        assert incident.severity == "critical"
        assert incident.labels["severity"] == "critical"
        kinds = set(
            session.scalars(select(Escalation.kind).where(Escalation.incident_id == incident.id))
        )
        assert "promoted" in kinds
        events = session.scalars(
            select(IncidentEvent.kind).where(IncidentEvent.incident_id == incident.id)
        ).all()
        assert "promoted" in events


def test_a_source_still_behind_holds_the_detectors_back_until_its_events_are_in(
    clean_db: str, tmp_path: Path
) -> None:
    config = make_config(
        security={
            "sources": [
                {"name": "auth-file", "stream": "auth", "file": str(tmp_path / "auth.jsonl"),
                 "batch": 2},
            ]
        }
    )  # fmt: skip
    write(tmp_path / "auth.jsonl", burst(T0, "203.0.113.60"))
    now = T0 + timedelta(minutes=30)
    first = runner.tick(session_scope, config, None, now, max_rounds=1)
    assert first["sources"]["auth-file"]["behind"] is True
    # Read up to T0 + 1 s: no detector may close a window past that yet.
    assert first["failed_logins"]["until"] == (T0 + timedelta(seconds=1)).isoformat()
    assert all_bans() == []
    second = runner.tick(session_scope, config, None, now)
    assert second["sources"]["auth-file"] == {"read": 4, "stored": 4}
    (ban,) = all_bans()
    assert ban.banned_at == T0 + timedelta(seconds=4)
