"""A monitored database that never answers (a host dropping packets, a hung server) is
reported unreachable within the connect timeout, so the `pg_reachable` alert can fire; it
does not hold the collector until the task's time limit kills it."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from core.maintenance.pg_metrics import collect_postgres


@pytest.fixture
def silent_server() -> Iterator[int]:
    # The kernel completes the TCP handshake for a listening socket; nobody ever answers
    # the startup packet, exactly like a hung server.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.timeout(30)
def test_a_database_that_never_answers_is_unreachable_data_within_the_timeout(
    silent_server: int, database_url: str
) -> None:
    now = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    targets = {
        "platform-db": f"postgresql://postgres@127.0.0.1:{silent_server}/shop",
        "eventops-db": database_url,
    }
    samples, errors = collect_postgres(targets, now, connect_timeout=2)

    reachable = {subject: value for name, subject, value, _ in samples if name == "pg_reachable"}
    assert reachable == {"platform-db": 0.0, "eventops-db": 1.0}
    assert set(errors) == {"platform-db"}


@pytest.mark.timeout(30)
def test_a_report_on_a_database_that_never_answers_is_an_error_within_the_timeout(
    silent_server: int, clean_db: str
) -> None:
    from core.maintenance.jobs import run_report
    from models.config_maintenance import MaintenanceConfig
    from models.db import session_scope

    now = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    url = f"postgresql://postgres@127.0.0.1:{silent_server}/shop"
    summary = run_report(
        "vacuum",
        {"platform-db": url},
        session_scope,
        MaintenanceConfig(),
        "UTC",
        now,
        connect_timeout=2,
    )
    assert set(summary) == {"platform-db"}
    assert "error" in summary["platform-db"]
