"""R3: Redis emptied under a running system (FLUSHDB of the test's own database)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from beat_schedule import DISPATCH_EVERY_S, SWEEP_EVERY_S
from core.clock import utcnow
from core.schedule import LEASE_GRACE
from models.db import session_scope
from models.tables import Outcome
from tests.faults.harness import (
    Cluster,
    CountingTarget,
    http_checks,
    latest_outcomes,
    outcome_statuses,
    queue_length,
    settle,
    wait_for,
    wait_for_ticks,
    worst_silence,
    write_config,
)
from tests.receivers import WebhookReceiver

pytestmark = [pytest.mark.fault, pytest.mark.timeout(200)]

INTERVAL = timedelta(seconds=5)
TIMEOUT = timedelta(seconds=2)
CHECKS = 20
# A slot whose message the flush destroyed is sent again once its lease runs out.
WORST_DELAY = INTERVAL + TIMEOUT + LEASE_GRACE + timedelta(seconds=3 * DISPATCH_EVERY_S + 5)
SECOND_STEP = timedelta(seconds=25)


@pytest.fixture
def target() -> Iterator[CountingTarget]:
    with CountingTarget(delay=1.0) as counting:
        counting.failing.add("/c/pay")
        yield counting


@pytest.fixture
def hooks() -> Iterator[tuple[WebhookReceiver, WebhookReceiver]]:
    with WebhookReceiver() as first, WebhookReceiver() as second:
        yield first, second


def test_flushed_redis_loses_no_check_and_no_pending_escalation(
    cluster: Callable[[Path], Cluster],
    clean_redis: str,
    tmp_path: Path,
    target: CountingTarget,
    hooks: tuple[WebhookReceiver, WebhookReceiver],
) -> None:
    """20 healthy checks (1 s probes, so batches wait in the queue) and a failing `pay`
    check whose critical policy pages `first` at once and `second` after 25 s. Once the
    first page is out, and while batches are queued, the broker's database is flushed:
    queued batches, ticks and Celery's bookkeeping vanish. Postgres is the truth, so:
    every check gets outcomes again, none went silent longer than one interval plus
    the lease (timeout + LEASE_GRACE) and a few ticks, no slot is `missed`, every claimed
    slot is finished, and the escalation step that was pending in Postgres still pages
    `second`, once.

    Only the test's own Redis database is flushed (FLUSHDB), never the server.
    """
    first, second = hooks
    checks = [
        {**check, "url": f"{target.url}/c/{check['name']}"}
        for check in http_checks("", CHECKS, INTERVAL, f"{TIMEOUT.seconds}s")
    ]
    pay = {
        "name": "pay",
        "url": f"{target.url}/c/pay",
        "interval": f"{INTERVAL.seconds}s",
        "timeout": f"{TIMEOUT.seconds}s",
        "severity": "critical",
    }
    config = write_config(
        tmp_path / "eventops.yaml",
        [*checks, pay],
        channels=[
            {"name": "first", "url": first.apprise_url},
            {"name": "second", "url": second.apprise_url},
        ],
        policies={
            "critical": {
                "steps": [
                    {"after": "0s", "channels": ["first"]},
                    {"after": f"{SECOND_STEP.seconds}s", "channels": ["second"]},
                ]
            }
        },
    )
    procs = cluster(config)
    procs.env["EVENTOPS_PROBE_BATCH_SIZE"] = "4"
    procs.start("worker", "worker", "-c", "2", "-n", "worker@%h")
    procs.start("beat", "beat")
    wait_for_ticks(procs)
    assert f"{CHECKS + 1} checks loaded" in procs.run("migrate")
    opened = utcnow()
    wait_for("the first page", lambda: "[CRITICAL] pay is down" in first.titles(), 30)
    wait_for("batches waiting in the queue", lambda: queue_length(clean_redis, "probes"), 20, 0.02)

    client = redis.Redis.from_url(clean_redis)
    try:
        client.flushdb()
    finally:
        client.close()
    flushed = utcnow()
    assert second.titles() == [], "the second step fired before the flush; nothing was tested"

    def all_checks_probed_since_flush() -> bool:
        latest = latest_outcomes()
        return len(latest) == CHECKS + 1 and min(latest.values()) > flushed + INTERVAL

    wait_for(
        "every check to be probed again after the flush",
        all_checks_probed_since_flush,
        WORST_DELAY.total_seconds() + 10,
    )
    left = (opened + SECOND_STEP + timedelta(seconds=2 * SWEEP_EVERY_S + 5)) - utcnow()
    wait_for("the pending second step to page", second.titles, max(left.total_seconds(), 1))
    procs.terminate("beat")
    settle(clean_redis, timeout=30)

    assert outcome_statuses()["missed"] == 0
    # The flush did destroy queued batches: their slots came back through the lease.
    with session_scope() as session:
        late = session.scalars(
            select(Outcome.slot).where(Outcome.observed_at - Outcome.slot >= LEASE_GRACE)
        ).all()
    assert late, "no slot was recovered through its lease: the flush destroyed nothing"
    name, silence = worst_silence()
    assert silence <= WORST_DELAY, f"{name} had no outcome for {silence}"
    time.sleep(1)
    assert first.titles() == ["[CRITICAL] pay is down"]
    assert len(second.titles()) == 1, second.titles()
