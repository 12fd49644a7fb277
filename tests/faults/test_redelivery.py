"""R9: a probe batch delivered more than once has its effect once."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.schedule import claim_due_slots
from models.db import session_scope
from models.tables import Incident, Notification, Outcome
from tests.faults.harness import (
    Cluster,
    CountingTarget,
    control_app,
    inflight,
    wait_for,
    write_config,
)
from tests.receivers import WebhookReceiver

pytestmark = [pytest.mark.fault, pytest.mark.timeout(120)]

# A worker whose broker gives an unacknowledged message back after 2 s and looks for such
# messages every second; the product's own timeout is two hours (workers/app.py).
SHORT_VISIBILITY_WORKER = """
from workers.app import app
app.conf.broker_transport_options = {
    "visibility_timeout": 2, "unacked_restore_interval": 1, "unacked_restore_throttle": 1,
}
from workers.cli import main
main(["worker", "-c", "2", "-n", "vt@%h"])
"""


@pytest.fixture
def target() -> Iterator[CountingTarget]:
    with CountingTarget(status=503) as counting:
        yield counting


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


def _configure(path: Path, target: CountingTarget, receiver: WebhookReceiver) -> Path:
    return write_config(
        path,
        [
            {
                "name": "api",
                "url": f"{target.url}/c/api",
                "interval": "5m",
                "timeout": "8s",
                "alert_threshold": 1,
                "severity": "critical",
            }
        ],
        channels=[{"name": "hook", "url": receiver.apprise_url}],
        policies={"critical": {"steps": [{"after": "0s", "channels": ["hook"]}]}},
    )


def _claim_one_slot() -> list[list]:
    """What a dispatch tick would publish for the one due check."""
    with session_scope() as session:
        slots = claim_due_slots(session)
    assert len(slots) == 1
    return [[s.check_id, s.slot.isoformat()] for s in slots]


def _count(model: type) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _assert_effects_once(receiver: WebhookReceiver) -> None:
    assert _count(Outcome) == 1
    assert _count(Incident) == 1
    with session_scope() as session:
        states = session.scalars(select(Notification.state)).all()
    assert states == ["sent"]
    assert receiver.titles() == ["[CRITICAL] api is down"]
    assert inflight() == []


def test_batch_redelivered_after_the_visibility_timeout_has_its_effect_once(
    cluster: Callable[[Path], Cluster],
    clean_redis: str,
    tmp_path: Path,
    target: CountingTarget,
    receiver: WebhookReceiver,
) -> None:
    """The Redis caveat itself: a real worker whose broker visibility timeout (2 s) is
    shorter than the batch (the target takes 5 s to answer 503). kombu gives the unacked
    message back while it runs, so the batch runs again and again, in parallel and after
    the first run finished. The target proves the redeliveries happened (3 or more
    probes); the outcome, the incident it opens and the page it sends exist once."""
    target.delay = 5.0
    config = _configure(tmp_path / "eventops.yaml", target, receiver)
    procs = cluster(config)
    assert "1 checks loaded" in procs.run("migrate")
    procs.start("worker", "-c", SHORT_VISIBILITY_WORKER)
    wait_for(
        "the worker", lambda: "vt@" in procs.log("worker") and " ready." in procs.log("worker")
    )
    control_app(clean_redis).send_task("probes.run_batch", args=[_claim_one_slot()], queue="probes")

    wait_for("the page", receiver.titles, 30)
    wait_for("two more runs of the batch", lambda: target.counts().get("/c/api", 0) >= 3, 30)
    time.sleep(1.0)  # the last run records its (duplicate) outcome
    procs.terminate("worker")
    assert "1 of 1 outcomes already recorded" in procs.log("worker")
    _assert_effects_once(receiver)


def test_same_batch_published_twice_at_once_has_its_effect_once(
    cluster: Callable[[Path], Cluster],
    clean_redis: str,
    tmp_path: Path,
    target: CountingTarget,
    receiver: WebhookReceiver,
) -> None:
    """Two identical `probes.run_batch` messages published together (a redelivery racing
    the original) run at the same moment on a worker with the product's settings: both
    probe (2 requests at the target), one outcome, one incident, one page."""
    target.delay = 1.0
    config = _configure(tmp_path / "eventops.yaml", target, receiver)
    procs = cluster(config)
    assert "1 checks loaded" in procs.run("migrate")
    procs.start("worker", "worker", "-c", "2", "-n", "twice@%h")
    wait_for(
        "the worker", lambda: "twice@" in procs.log("worker") and " ready." in procs.log("worker")
    )
    batch = _claim_one_slot()
    producer = control_app(clean_redis)
    for _ in range(2):
        producer.send_task("probes.run_batch", args=[batch], queue="probes")
    procs.start("beat", "beat")  # its sweeper ticks would send anything left in the outbox

    wait_for("the page", receiver.titles, 30)
    wait_for(
        "both copies to run",
        lambda: procs.log("worker").count("1 of 1 outcomes already recorded") == 1,
        30,
    )
    time.sleep(6)  # a sweep tick or two: nothing more may be sent
    assert target.counts() == {"/c/api": 2}
    _assert_effects_once(receiver)
