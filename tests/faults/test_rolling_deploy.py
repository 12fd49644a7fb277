"""R8: a rolling deploy: SIGTERM a worker while batches run and more wait in the queue."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from demo.platform import DemoPlatform
from tests.faults.harness import (
    Cluster,
    busy_pool_pids,
    claimed_in_logs,
    control_app,
    gaps,
    http_checks,
    load_staggered,
    outcome_slots,
    outcome_statuses,
    queue_length,
    settle,
    wait_for,
    wait_for_ticks,
    write_config,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(150)]

# Longer than the deploy's pause: the old worker drains while the new one boots (~3 s).
INTERVAL = timedelta(seconds=8)
CHECKS = 48


@pytest.fixture
def platform() -> Iterator[DemoPlatform]:
    with DemoPlatform(slow=["supabase"], slow_delay=1.0) as demo:
        yield demo


def test_sigterm_of_a_worker_with_batches_running_and_queued_loses_nothing(
    cluster: Callable[[Path], Cluster],
    clean_redis: str,
    tmp_path: Path,
    platform: DemoPlatform,
) -> None:
    """Worker A (every queue, two pool processes) probes 48 checks; when batches are both
    running on A and waiting in the `probes` queue, A gets SIGTERM (Celery's warm shutdown:
    finish what runs, give back what was reserved) and worker B starts, as a rolling deploy
    does. A must exit cleanly on its own, and at the end dispatched equals completed: the
    slots claimed by every dispatch tick (on A and on B) equal the outcomes written, no slot
    is in flight or `missed`, and no check has a hole in its slot sequence."""
    checks = http_checks(f"{platform.url}/api/health/supabase", CHECKS, INTERVAL, "3s")
    procs = cluster(write_config(tmp_path / "eventops.yaml", checks))
    procs.env["EVENTOPS_PROBE_BATCH_SIZE"] = "4"
    every_queue = ("worker", "-Q", "probes,pipeline,escalations", "-c", "2")
    procs.start("worker-a", *every_queue, "-n", "a@%h")
    procs.start("beat", "beat")
    wait_for_ticks(procs)
    load_staggered(procs, checks, groups=4)
    wait_for("every check to have an outcome", lambda: len(outcome_slots()) == CHECKS, 40)

    control = control_app(clean_redis)
    wait_for(
        "batches running on A with more queued behind them",
        lambda: (
            queue_length(clean_redis, "probes") > 0
            and busy_pool_pids(control, "a", "probes.run_batch")
        ),
        30,
        every=0.05,
    )
    started = time.monotonic()
    procs.running["worker-a"].terminate()
    procs.start("worker-b", *every_queue, "-n", "b@%h")
    assert procs.running["worker-a"].wait(30) == 0
    drained = time.monotonic() - started
    assert "Warm shutdown" in procs.log("worker-a")
    # Running batches finish (3 s at most each); queued ones are given back, not drained.
    # The bound is loose because this machine is shared: it catches a worker that drains
    # its queue or hangs, not a slow one.
    assert drained < 20, f"A took {drained:.1f} s to stop"
    wait_for("B to hand out work", lambda: "dispatched" in procs.log("worker-b"), 30)

    time.sleep(INTERVAL.seconds)  # another round on B alone
    procs.terminate("beat")
    settle(clean_redis, timeout=30)

    slots = outcome_slots()
    assert set(slots) == {c["name"] for c in checks}
    assert outcome_statuses()["missed"] == 0
    assert gaps(slots, INTERVAL) == {}
    dispatched = claimed_in_logs([procs.log("worker-a"), procs.log("worker-b")])
    completed = sum(map(len, slots.values()))
    assert dispatched == completed, (dispatched, completed)
