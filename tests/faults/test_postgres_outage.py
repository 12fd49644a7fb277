"""R2: Postgres unreachable for 60 s while probes run.

The shared Postgres is never touched: the cluster runs on a private embedded server that the
test stops and starts again.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pytest
from sqlalchemy import select

from core.clock import utcnow
from core.migrate import upgrade
from core.schedule import LEASE_GRACE
from models import db
from models.db import session_scope
from models.tables import Check, Outcome
from tests.faults.harness import (
    Cluster,
    CountingTarget,
    claimed_in_logs,
    http_checks,
    inflight,
    outcome_slots,
    outcome_statuses,
    settle,
    wait_for,
    wait_for_ticks,
    write_config,
)
from workers.embedded import EmbeddedPostgres

pytestmark = [pytest.mark.fault, pytest.mark.timeout(420)]

OUTAGE = timedelta(seconds=60)
INTERVAL = timedelta(seconds=6)
TIMEOUT = "4s"
CHECKS = 12
# After Postgres returns: a deferred write retries at most 60 s apart, and a slot whose
# batch gave up comes back when its lease (timeout + LEASE_GRACE) runs out.
RECOVERY = timedelta(seconds=60) + LEASE_GRACE + INTERVAL + timedelta(seconds=20)


@pytest.fixture
def private_postgres(database_url: str) -> Iterator[EmbeddedPostgres]:
    """A server of this test's own, migrated; the test process reads it too, then goes back
    to the session database."""
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="eventops-r2-")) / "data").start()
    try:
        url = server.create_database("eventops")
        upgrade(url)
        db.configure(url)
        yield server
    finally:
        db.configure(database_url)
        server.remove()
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


@pytest.fixture
def target() -> Iterator[CountingTarget]:
    # Two-second answers: a batch is mid-probe most of the time, so the outage catches one
    # with outcomes in hand and nowhere to write them.
    with CountingTarget(delay=2.0) as counting:
        yield counting


def checks_probed_since(moment: datetime) -> set[str]:
    with session_scope() as session:
        return set(
            session.scalars(
                select(Check.name)
                .join(Outcome, Outcome.check_id == Check.id)
                .where(Outcome.observed_at > moment)
                .distinct()
            )
        )


def test_postgres_outage_of_60_seconds_loses_no_outcome_and_needs_no_restart(
    cluster: Callable[[Path], Cluster],
    clean_redis: str,
    private_postgres: EmbeddedPostgres,
    tmp_path: Path,
    target: CountingTarget,
) -> None:
    """Twelve checks every 6 s against a target that answers in 2 s. Right after a batch
    started probing, Postgres stops for 60 s, then starts again; the worker and beat are
    never restarted. Outcomes the batch had in hand during the gap are handed to
    `pipeline.record_outcomes`, which retries until Postgres is back; batches that could not
    even load their targets fail and their slots come back through the lease. So, after
    it: every check is probed again by the same worker processes, no slot is left in
    flight or recorded `missed`, every slot that was in flight when Postgres stopped has its
    outcome (the deferred one or the re-probe's, whichever came first), and every slot a
    dispatch tick claimed has exactly one outcome."""
    checks = http_checks("", CHECKS, INTERVAL, TIMEOUT)
    checks = [{**check, "url": f"{target.url}/c/{check['name']}"} for check in checks]
    procs = cluster(write_config(tmp_path / "eventops.yaml", checks))
    procs.env["EVENTOPS_DATABASE_URL"] = private_postgres.url("eventops")
    procs.env["EVENTOPS_PROBE_BATCH_SIZE"] = "3"
    worker_pid = procs.start("worker", "worker", "-c", "3", "-n", "worker@%h")
    procs.start("beat", "beat")
    wait_for_ticks(procs)
    assert f"{CHECKS} checks loaded" in procs.run("migrate")
    wait_for(
        "every check probed once",
        lambda: len(checks_probed_since(utcnow() - INTERVAL * 10)) == CHECKS,
        40,
    )

    # Stop Postgres the moment a probe request arrives: that batch has loaded its targets
    # and will have its outcomes two seconds later, with Postgres gone.
    before = sum(target.counts().values())
    wait_for("a batch to start probing", lambda: sum(target.counts().values()) > before, 20, 0.01)
    in_flight_at_stop = inflight()
    private_postgres.stop()
    time.sleep(OUTAGE.total_seconds())
    private_postgres.start()
    restarted = utcnow()

    wait_for(
        "every check probed again after the outage",
        lambda: checks_probed_since(restarted) == {c["name"] for c in checks},
        RECOVERY.total_seconds(),
        1.0,
    )
    assert psutil.Process(worker_pid).is_running(), "the worker had to be restarted"
    procs.terminate("beat")
    settle(clean_redis, timeout=RECOVERY.total_seconds())

    assert in_flight_at_stop, "no batch was in flight when Postgres stopped: nothing was tested"
    # Whichever came first, the deferred write or the re-probe after the lease: one outcome.
    written = outcome_slots()
    lost = [(name, slot) for name, slot in in_flight_at_stop if slot not in written.get(name, [])]
    assert lost == [], f"slots in flight when Postgres stopped never got an outcome: {lost}"
    assert "pipeline.record_outcomes" in procs.log("worker")
    assert inflight() == []
    assert outcome_statuses()["missed"] == 0
    dispatched = claimed_in_logs([procs.log("worker")])
    completed = sum(outcome_statuses().values())
    assert dispatched == completed, (dispatched, completed)
