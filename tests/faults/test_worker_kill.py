"""R1: pool processes SIGKILLed in the middle of probe batches, again and again."""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psutil
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
    settle,
    wait_for,
    wait_for_ticks,
    write_config,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(150)]

# Longer than a killed batch takes to come back: the worker notices a dead pool process
# within about 5 s (billiard's maintenance timer), then the batch is requeued and probed
# again (up to about 6 s in all). With a shorter interval the check's next slot would be
# claimed more than an interval late, and a late claim skips a slot by design
# (core/schedule.py).
INTERVAL = timedelta(seconds=8)
CHECKS = 48
KILLS = 5


@pytest.fixture
def platform() -> Iterator[DemoPlatform]:
    # Each probe takes 1 s: a batch is still running when `inspect active` has answered.
    with DemoPlatform(slow=["supabase"], slow_delay=1.0) as demo:
        yield demo


def test_sigkilled_pool_processes_lose_no_slot_and_duplicate_none(
    cluster: Callable[[Path], Cluster],
    clean_redis: str,
    tmp_path: Path,
    platform: DemoPlatform,
) -> None:
    """Five times, a pool process that is running `probes.run_batch` (found through the
    workers' own `inspect active`) is SIGKILLed. `acks_late` with `reject_on_worker_lost`
    must give each batch back to the queue, and another process must probe it, well within
    one interval, without waiting for the 60 s lease. After beat stops, every slot a
    dispatch tick claimed (summed from the ticks' logged summaries) has exactly one
    outcome, no slot is left in flight, none is `missed`, and no check has a hole in its
    slot sequence.

    The dispatch tick runs on a second worker (pipeline queue) that is never killed: a tick
    killed between its commit and its publish is the lease's job, tested in R3.
    """
    checks = http_checks(f"{platform.url}/api/health/supabase", CHECKS, INTERVAL, "3s")
    procs = cluster(write_config(tmp_path / "eventops.yaml", checks))
    procs.env["EVENTOPS_PROBE_BATCH_SIZE"] = "4"
    procs.start("probes", "worker", "-Q", "probes", "-c", "3", "-n", "probes@%h")
    procs.start("control", "worker", "-Q", "pipeline,escalations", "-c", "1", "-n", "control@%h")
    procs.start("beat", "beat")
    wait_for_ticks(procs)
    load_staggered(procs, checks, groups=4)
    control = control_app(clean_redis)

    wait_for("probes to flow", lambda: len(outcome_slots()) == CHECKS, 40)
    killed: list[int] = []
    deadline = time.monotonic() + 40
    while len(killed) < KILLS and time.monotonic() < deadline:
        busy = busy_pool_pids(control, "probes", "probes.run_batch")
        # A process killed a moment ago stays "active" until billiard notices it is gone.
        candidates = sorted(busy & procs.pool_pids("probes") - set(killed))
        if not candidates:
            time.sleep(0.1)
            continue
        victim = random.choice(candidates)
        with contextlib.suppress(psutil.NoSuchProcess):  # it exited just now
            psutil.Process(victim).send_signal(signal.SIGKILL)
            killed.append(victim)
        time.sleep(2.0)
    assert len(killed) == KILLS, f"only {len(killed)} busy pool processes were killed"

    time.sleep(INTERVAL.seconds)  # another round on the replacement processes
    procs.terminate("beat")
    settle(clean_redis, timeout=30)

    slots = outcome_slots()
    statuses = outcome_statuses()
    # The kills hit running batches (a process idle at that moment raises nothing).
    assert procs.log("probes").count("WorkerLostError('Worker exited prematurely") >= 3
    assert set(slots) == {f"c{i:02d}" for i in range(CHECKS)}
    assert statuses["missed"] == 0, statuses
    assert gaps(slots, INTERVAL) == {}
    dispatched = claimed_in_logs([procs.log("control")])
    completed = sum(map(len, slots.values()))
    assert dispatched == completed, (dispatched, completed)
