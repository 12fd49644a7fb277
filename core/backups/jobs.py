"""One (kind, slot) job row in `backups` or `restore_runs`, claimed exactly once.

Every backup, restore test, point-in-time restore and drill runs as a row keyed by
(kind, slot): a duplicate tick, a second beat or a redelivered task finds the row and does
nothing. The holder refreshes `heartbeat_at` while it works; a `running` row whose
heartbeat is older than the caller's lease belongs to a dead worker and is taken over.
The outcome is written only if this run still holds the row.

Ownership is either *fenced* or by state alone:

- fenced (`fence=True`): the claim writes a random token into `details["claim"]`; the
  heartbeat and `finish` touch the row only while it is running *with that token*, so a
  worker whose row was taken over can no longer write to it (and its `Lease` reports it
  `lost`). `details` keeps the bookkeeping (`claim`, `took_over`) and `finish` merges the
  outcome's details into it.
- by state (`fence=False`): the heartbeat and `finish` touch the row while it is running;
  `details` belongs to the caller, and `finish` replaces it when given.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from models.db import affected
from models.tables import Backup, RestoreRun

log = logging.getLogger(__name__)

SessionFactory = Callable[[], AbstractContextManager[Session]]
Model = type[Backup] | type[RestoreRun]
Row = TypeVar("Row", Backup, RestoreRun)

# What a Backup row's previous run may have left: a retaken row starts clean.
_BACKUP_RESULTS: dict[str, Any] = {
    "path": None,
    "size_bytes": None,
    "sha256": None,
    "duration_s": None,
    "snapshot_at": None,
    "tables": {},
    "verify_state": "unverified",
    "verified_at": None,
    "verify_error": None,
}


@dataclass(frozen=True)
class Claim:
    """The outcome of `claim`: the row, and whether this run holds it (`owned`)."""

    model: Model
    row_id: int
    token: str
    fenced: bool = True
    skipped: str | None = None  # why this run does not hold the row
    state: str | None = None  # the row's state, when skipped
    took_over: str | None = None  # the state of the row this run took over
    previous_target: str | None = None  # RestoreRun.target of the run taken over

    @property
    def owned(self) -> bool:
        return self.skipped is None


def claim(
    session: Session,
    model: type[Row],
    kind: str,
    slot: datetime,
    at: datetime,
    *,
    lease: timedelta,
    retake_failed: bool = False,
    fence: bool = True,
    details: Mapping[str, Any] | None = None,
    columns: Mapping[str, Any] | None = None,
) -> Claim:
    """INSERT ... ON CONFLICT DO NOTHING; else take over a row whose worker died (running,
    heartbeat older than `lease`) or, with `retake_failed`, a failed one; else report why
    we skip. Concurrent callers serialize on the unique index and the row lock, so only
    one of them gets the row. `details` and `columns` are the new run's row values, on
    insert and on take-over alike."""
    token = uuid.uuid4().hex
    start: dict[str, Any] = {
        **(columns or {}),
        "state": "running",
        "started_at": at,
        "heartbeat_at": at,
        "details": {**(details or {}), **({"claim": token} if fence else {})},
    }
    row_id = session.execute(
        pg_insert(model)
        .values(kind=kind, slot=slot, **start)
        .on_conflict_do_nothing(index_elements=["kind", "slot"])
        .returning(model.id)
    ).scalar_one_or_none()
    if row_id is not None:
        _audit_run(session, model, row_id, "start", at, {"kind": kind, "slot": slot.isoformat()})
        return Claim(model, row_id, token, fence)
    existing = session.execute(
        select(model).where(model.kind == kind, model.slot == slot).with_for_update()
    ).scalar_one()
    stale = existing.state == "running" and existing.heartbeat_at < at - lease
    if not (stale or (retake_failed and existing.state == "failed")):
        why = "running elsewhere" if existing.state == "running" else f"already {existing.state}"
        return Claim(model, existing.id, token, fence, skipped=why, state=existing.state)
    previous = existing.state
    if fence:
        start["details"] = {**start["details"], "took_over": previous}
    values = {**start, "finished_at": None, "error": None}
    if model is Backup:
        values = {**_BACKUP_RESULTS, **values}
    session.execute(update(model).where(model.id == existing.id).values(**values))
    log.warning("%s %s/%s: took over a %s row", model.__tablename__, kind, slot, previous)
    _audit_run(
        session,
        model,
        existing.id,
        "start",
        at,
        {"kind": kind, "slot": slot.isoformat(), "took_over": previous},
    )
    return Claim(
        model,
        existing.id,
        token,
        fence,
        took_over=previous,
        previous_target=getattr(existing, "target", None),
    )


def _held(claim: Claim) -> list[ColumnElement[bool]]:
    """The row is still this run's: running and, when fenced, with its token."""
    model = claim.model
    held = [model.id == claim.row_id, model.state == "running"]
    if claim.fenced:
        held.append(model.details["claim"].astext == claim.token)
    return held


def owns(session: Session, claim: Claim) -> bool:
    """Whether this run still holds the row, locking it until the session commits (so a
    side effect done under the lock, such as a rename, cannot race a take-over)."""
    found = session.execute(
        select(claim.model.id).where(*_held(claim)).with_for_update()
    ).scalar_one_or_none()
    return found is not None


def beat(sessions: SessionFactory, claim: Claim, at: datetime) -> bool:
    """Refresh the row's heartbeat in one short transaction; False if it is no longer ours."""
    with sessions() as session:
        touched = session.execute(update(claim.model).where(*_held(claim)).values(heartbeat_at=at))
        return affected(touched) > 0


class Lease:
    """Keeps the claimed row's heartbeat fresh from a thread, every `every` seconds, while
    the block runs (a dump or a restore is one long blocking call); `lost` turns true if
    the row stopped being ours (another worker took it over)."""

    def __init__(
        self,
        sessions: SessionFactory,
        claim: Claim,
        now: Callable[[], datetime],
        *,
        every: float,
    ):
        self._sessions, self._claim, self._now, self._every = sessions, claim, now, every
        self._stop = threading.Event()
        name = f"heartbeat-{claim.model.__tablename__}-{claim.row_id}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.lost = False

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                held = beat(self._sessions, self._claim, self._now())
            except Exception:  # eventops' DB blinked: try again next beat
                log.exception(
                    "heartbeat of %s %s failed",
                    self._claim.model.__tablename__,
                    self._claim.row_id,
                )
                continue
            if not held:
                self.lost = True
                return


def finish(session: Session, claim: Claim, **values: Any) -> bool:
    """Record the outcome if this run still holds the row (a conditional update); False
    if it does not. A fenced claim's `details` are merged into the row's, keeping the
    claim bookkeeping; otherwise they replace them."""
    model = claim.model
    if claim.fenced and "details" in values:
        values["details"] = model.details.op("||")(literal(values["details"], JSONB))
    done = affected(session.execute(update(model).where(*_held(claim)).values(**values))) > 0
    if done:
        ended = values.get("finished_at")
        at = ended if isinstance(ended, datetime) else None
        _audit_run(session, model, claim.row_id, "finish", at, {"state": values.get("state")})
    return done


def _audit_run(
    session: Session,
    model: Model,
    row_id: int,
    phase: str,
    at: datetime | None,
    details: dict[str, Any],
) -> None:
    """Backups, restore tests, drills and PITR restores start and finish in the audit log:
    `backup.start`, `restore_run.finish`, subject `backups:12`."""
    from core.audit import audit

    noun = model.__tablename__.removesuffix("s")
    audit(session, "eventops", f"{noun}.{phase}", f"{model.__tablename__}:{row_id}", details, at=at)


def finish_with(sessions: SessionFactory, claim: Claim, **values: Any) -> bool:
    """`finish` in a transaction of its own."""
    with sessions() as session:
        return finish(session, claim, **values)
