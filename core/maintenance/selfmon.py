"""Monitoring the monitor: is beat ticking, are the workers alive, do the queues drain, does
the escalation sweeper run, does the outbox empty? And an outside dead man's switch.

Each part leaves a mark in Postgres as it works (`selfmon_marks`, `worker_heartbeats`); the
`selfmon.check` task (every 30 s) reads the marks against the thresholds in
`maintenance:`, writes the figures to the metrics table so the usual rules alert on them,
and pings the dead man's switch (Healthchecks style) only while every check passes, or its
`/fail` URL when one does not. When eventops is dead altogether nothing pings, and the
outside service pages someone.

What each mark proves:
- `beat` is written by the `selfmon.heartbeat` task (every 15 s) on a worker: beat emitted
  it, Redis carried it and a pipeline worker ran it, so a stale `beat` mark means one of
  the three is broken.
- `beat-process` is written by a thread inside the beat process itself: fresh `beat-process`
  with a stale `beat` points at Redis or the workers, not at beat.
- `escalation-sweeper` is written after every sweep: paging works end to end.
- `worker_heartbeats` rows are written by each worker's own thread (core.maintenance.
  host_metrics): a stopped or hung worker goes stale.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.maintenance.redis_metrics import QueueFigures
from core.metrics import record_metrics
from models.config_maintenance import MaintenanceConfig
from models.maintenance import SelfmonMark, WorkerHeartbeat
from models.tables import Notification

log = logging.getLogger(__name__)

BEAT = "beat"
BEAT_PROCESS = "beat-process"
SWEEPER = "escalation-sweeper"
DEADMANS_SWITCH = "deadmans-switch"
SUBJECT = "eventops"


def stamp(
    session: Session, source: str, now: datetime, details: dict[str, Any] | None = None
) -> None:
    """Record that `source` just proved it works (an upsert: one row per source)."""
    statement = insert(SelfmonMark).values(source=source, last_seen=now, details=details or {})
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[SelfmonMark.source],
            set_={"last_seen": statement.excluded.last_seen, "details": statement.excluded.details},
            # A replayed or late stamp never moves the mark back in time.
            where=SelfmonMark.last_seen < statement.excluded.last_seen,
        )
    )


@dataclass(frozen=True)
class Verdict:
    """One self-monitoring check: `check` names the kind, `subject` what it is about."""

    check: str  # beat | sweeper | worker | queue | outbox
    subject: str
    healthy: bool
    value: float | None
    detail: str


def _age_s(now: datetime, then: datetime | None) -> float:
    return math.inf if then is None else max(0.0, (now - then).total_seconds())


def evaluate(
    session: Session,
    config: MaintenanceConfig,
    now: datetime,
    queues: Iterable[QueueFigures] | None = None,
) -> list[Verdict]:
    """Every self-monitoring check at `now`. `queues` are the broker figures the caller
    read from Redis (None: the broker was not read, so no queue verdicts)."""
    marks = {m.source: m.last_seen for m in session.scalars(select(SelfmonMark))}
    verdicts: list[Verdict] = []
    for check, source, limit in (
        ("beat", BEAT, config.beat_stale_after),
        ("sweeper", SWEEPER, config.sweeper_stale_after),
    ):
        age = _age_s(now, marks.get(source))
        detail = (
            "never seen"
            if math.isinf(age)
            else f"last {source} mark {age:.0f} s ago (limit {limit.total_seconds():.0f} s)"
        )
        verdicts.append(
            Verdict(
                check,
                source,
                age <= limit.total_seconds(),
                None if math.isinf(age) else age,
                detail,
            )
        )
    workers = session.execute(select(WorkerHeartbeat.hostname, WorkerHeartbeat.last_seen)).all()
    limit_s = config.worker_stale_after.total_seconds()
    for hostname, last_seen in workers:
        age = _age_s(now, last_seen)
        verdicts.append(
            Verdict(
                "worker",
                hostname,
                age <= limit_s,
                age,
                f"last heartbeat {age:.0f} s ago (limit {limit_s:.0f} s)",
            )
        )
    if not any(v.check == "worker" and v.healthy for v in verdicts):
        verdicts.append(Verdict("worker", "any", False, 0.0, "no worker has reported recently"))
    if queues is not None:
        lag_limit = config.queue_lag_max.total_seconds()
        for queue in queues:
            lag = queue.oldest_age_s
            verdicts.append(
                Verdict(
                    "queue",
                    queue.name,
                    lag is None or lag <= lag_limit,
                    lag,
                    f"{queue.length} waiting, oldest "
                    + ("unstamped" if lag is None else f"{lag:.0f} s")
                    + f" (limit {lag_limit:.0f} s)",
                )
            )
    backlog = int(
        session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(
                Notification.state == "pending",
                Notification.next_attempt_at <= now - config.outbox_backlog_after,
            )
        )
        or 0
    )
    verdicts.append(
        Verdict(
            "outbox",
            SUBJECT,
            backlog == 0,
            float(backlog),
            f"{backlog} notifications due for over "
            f"{config.outbox_backlog_after.total_seconds():.0f} s and unsent",
        )
    )
    return verdicts


def record_verdicts(session: Session, verdicts: Iterable[Verdict], now: datetime) -> int:
    """The figures rules alert on (queue figures are written by the Redis collector):

    - `beat_heartbeat_age_s`, `sweeper_last_run_age_s` (subject `eventops`; not written
      while the mark was never seen: the rule on `selfmon_failing` covers that);
    - `worker_missing` per worker (0/1);
    - `outbox_backlog` (count);
    - `selfmon_failing` (subject `eventops`): how many checks fail, 0 when all is well.
    """
    verdicts = list(verdicts)
    samples: list[tuple[str, str, float, datetime]] = []
    for v in verdicts:
        if v.check == "beat" and v.value is not None:
            samples.append(("beat_heartbeat_age_s", SUBJECT, v.value, now))
        elif v.check == "sweeper" and v.value is not None:
            samples.append(("sweeper_last_run_age_s", SUBJECT, v.value, now))
        elif v.check == "worker" and v.subject != "any":
            samples.append(("worker_missing", v.subject, float(not v.healthy), now))
        elif v.check == "outbox" and v.value is not None:
            samples.append(("outbox_backlog", SUBJECT, v.value, now))
    samples.append(("selfmon_failing", SUBJECT, float(sum(not v.healthy for v in verdicts)), now))
    return record_metrics(session, samples)


def ping_url(base: str, healthy: bool) -> str:
    """Healthchecks' convention: the URL itself for success, `<url>/fail` for failure."""
    if healthy:
        return base
    path, sep, query = base.partition("?")
    return f"{path.rstrip('/')}/fail{sep}{query}"


def ping_deadmans_switch(
    url: str, verdicts: Iterable[Verdict], timeout: float = 10.0
) -> dict[str, Any]:
    """POST the verdicts' summary to the switch (or its /fail URL). Never raises: a switch
    that cannot be reached is reported in the result, and it pages on its own when no ping
    arrives."""
    verdicts = list(verdicts)
    healthy = all(v.healthy for v in verdicts)
    body = "\n".join(
        f"{'ok  ' if v.healthy else 'FAIL'} {v.check} {v.subject}: {v.detail}" for v in verdicts
    )
    target = ping_url(url, healthy)
    try:
        response = httpx.post(target, content=body.encode(), timeout=timeout)
        return {"healthy": healthy, "status": response.status_code, "ok": response.is_success}
    except httpx.HTTPError as error:
        return {"healthy": healthy, "status": None, "ok": False, "error": type(error).__name__}


class MarkThread:
    """Stamps `source` every `every` from a thread of the current process (beat's own
    liveness, independent of Redis and the workers). Failures are logged and retried."""

    def __init__(
        self,
        sessions: Callable[[], AbstractContextManager[Session]],
        source: str,
        every: float,
        clock: Callable[[], datetime],
        details: dict[str, Any] | None = None,
    ) -> None:
        self.sessions, self.source, self.every, self.clock = sessions, source, every, clock
        self.details = details or {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"eventops-{source}", daemon=True)

    def start(self) -> MarkThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.sessions() as session:
                    stamp(session, self.source, self.clock(), self.details)
            except Exception:  # the next tick retries; the thread must live
                log.warning("%s mark failed", self.source, exc_info=True)
            self._stop.wait(self.every)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
