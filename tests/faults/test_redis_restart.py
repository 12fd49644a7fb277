"""R3, second half: the broker restarted mid-run (a private Redis, stopped and started again).

A restart is harsher than a flush: every connection of the worker, beat and the result
backend breaks, and for a few seconds nothing answers at all. The shared Redis is never
touched.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from beat_schedule import DISPATCH_EVERY_S, SWEEP_EVERY_S
from core.clock import utcnow
from core.schedule import LEASE_GRACE
from tests.faults.harness import (
    Cluster,
    CountingTarget,
    http_checks,
    latest_outcomes,
    outcome_statuses,
    settle,
    wait_for,
    wait_for_ticks,
    worst_silence,
    write_config,
)
from tests.receivers import WebhookReceiver
from workers.embedded import EmbeddedRedis

pytestmark = [pytest.mark.fault, pytest.mark.timeout(240)]

INTERVAL = timedelta(seconds=5)
TIMEOUT = timedelta(seconds=2)
CHECKS = 12
DOWN_FOR = timedelta(seconds=5)
# A slot whose message died with Redis comes back when its lease runs out; the workers
# reconnect within a few seconds of Redis answering again.
WORST_DELAY = (
    DOWN_FOR + INTERVAL + TIMEOUT + LEASE_GRACE + timedelta(seconds=3 * DISPATCH_EVERY_S + 10)
)
SECOND_STEP = timedelta(seconds=30)


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="eventops-r3-"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def target() -> Iterator[CountingTarget]:
    with CountingTarget(delay=1.0) as counting:
        counting.failing.add("/c/pay")
        yield counting


def test_restarted_redis_loses_no_check_and_no_pending_escalation_and_needs_no_restart(
    cluster: Callable[[Path], Cluster],
    private_redis: EmbeddedRedis,
    tmp_path: Path,
    target: CountingTarget,
) -> None:
    """Twelve healthy checks and a failing `pay` whose policy pages `first` at once and
    `second` after 30 s. Once the first page is out, Redis is stopped for 5 s and started
    empty on the same port. The worker and beat are the same processes before and after;
    every check is probed again within its interval plus the lease; no slot is `missed`;
    and the escalation step pending in Postgres pages `second`, exactly once."""
    with WebhookReceiver() as first, WebhookReceiver() as second:
        checks = [
            {**check, "url": f"{target.url}/c/{check['name']}"}
            for check in http_checks("", CHECKS, INTERVAL, f"{TIMEOUT.seconds}s")
        ]
        pay = {
            "name": "pay",
            "url": f"{target.url}/c/pay",
            "interval": f"{INTERVAL.seconds}s",
            "timeout": f"{TIMEOUT.seconds}s",
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
        procs.env["EVENTOPS_BROKER_URL"] = private_redis.url
        procs.env["EVENTOPS_PROBE_BATCH_SIZE"] = "4"
        worker = procs.start("worker", "worker", "-c", "2", "-n", "worker@%h")
        beat = procs.start("beat", "beat")
        wait_for_ticks(procs)
        assert f"{CHECKS + 1} checks loaded" in procs.run("migrate")
        opened = utcnow()
        wait_for("the first page", lambda: "[CRITICAL] pay is down" in first.titles(), 30)

        private_redis.stop()
        time.sleep(DOWN_FOR.total_seconds())
        private_redis.start()
        back = utcnow()
        assert second.titles() == [], "the second step fired before the restart"

        def all_checks_probed_since_restart() -> bool:
            latest = latest_outcomes()
            return len(latest) == CHECKS + 1 and min(latest.values()) > back + INTERVAL

        wait_for(
            "every check to be probed again after the restart",
            all_checks_probed_since_restart,
            WORST_DELAY.total_seconds() + 10,
        )
        left = (opened + SECOND_STEP + timedelta(seconds=2 * SWEEP_EVERY_S + 10)) - utcnow()
        wait_for("the pending second step to page", second.titles, max(left.total_seconds(), 1))
        assert psutil.Process(worker).is_running() and psutil.Process(beat).is_running()
        procs.terminate("beat")
        settle(private_redis.url, timeout=30)

        assert outcome_statuses()["missed"] == 0
        name, silence = worst_silence()
        assert silence <= WORST_DELAY, f"{name} had no outcome for {silence}"
        time.sleep(1)
        assert first.titles() == ["[CRITICAL] pay is down"]
        assert len(second.titles()) == 1, second.titles()
