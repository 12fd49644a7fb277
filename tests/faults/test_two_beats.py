"""R4: two beat processes at once (a botched deploy, or a failover that left the old one up)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.faults.harness import (
    Cluster,
    CountingTarget,
    claimed_in_logs,
    gaps,
    http_checks,
    outcome_slots,
    outcome_statuses,
    settle,
    wait_for,
    wait_for_ticks,
    write_config,
)

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

INTERVAL = timedelta(seconds=4)
CHECKS = 30
TICK = "Sending due task dispatch-due-checks"


@pytest.fixture
def target() -> Iterator[CountingTarget]:
    with CountingTarget(delay=0.2) as counting:
        yield counting


def test_two_beats_dispatch_and_probe_each_slot_once(
    cluster: Callable[[Path], Cluster],
    clean_redis: str,
    tmp_path: Path,
    target: CountingTarget,
) -> None:
    """Two beats (each with its own schedule file) tick `dispatch-due-checks` side by side
    for 16 s against one worker, so two ticks race for the same due rows every round. The
    claim (`FOR UPDATE SKIP LOCKED` and the advance of `next_due_at` in one statement) must
    hand each (check, slot) to one of them: the target, which counts the requests it gets
    per check, saw exactly as many probes of each check as that check has outcomes, and the
    slots the ticks claimed equal the outcomes written.

    A backup slot run by two deliveries at once (what two beats' `backup-hourly` ticks
    amount to: the task derives the slot from the hour) is covered by
    tests/integration/test_backups_logical.py::
    test_redelivered_backup_task_produces_one_backup_row_and_one_file.
    """
    checks = [
        {**check, "url": f"{target.url}/c/{check['name']}"}
        for check in http_checks("", CHECKS, INTERVAL, "2s")
    ]
    config = write_config(tmp_path / "eventops.yaml", checks)
    procs = cluster(config)
    procs.start("worker", "worker", "-c", "2", "-n", "worker@%h")
    # At DEBUG: each beat's "Sending due task" line is the witness that both really tick,
    # and beat says it about a routine tick at DEBUG only.
    for beat in ("beat-1", "beat-2"):
        procs.start(beat, "beat", "-l", "DEBUG", env={"EVENTOPS_VAR_DIR": str(tmp_path / beat)})
    wait_for_ticks(procs)
    wait_for("both beats to tick", lambda: all(TICK in procs.log(b) for b in ("beat-1", "beat-2")))
    assert f"{CHECKS} checks loaded" in procs.run("migrate")  # all due from now on

    time.sleep(16)
    procs.terminate("beat-1")
    procs.terminate("beat-2")
    settle(clean_redis, timeout=30)

    ticks = [procs.log(b).count(TICK) for b in ("beat-1", "beat-2")]
    assert min(ticks) >= 7, ticks  # both really did race, all along
    slots = outcome_slots()
    outcomes = {name: len(seen) for name, seen in slots.items()}
    probes = {path.removeprefix("/c/"): n for path, n in target.counts().items()}
    assert len(outcomes) == CHECKS and min(outcomes.values()) >= 3, outcomes
    assert probes == outcomes
    assert outcome_statuses() == {"up": sum(outcomes.values())}
    assert gaps(slots, INTERVAL) == {}
    assert claimed_in_logs([procs.log("worker")]) == sum(outcomes.values())
