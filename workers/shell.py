"""`eventops shell`: a Python prompt with the app, the tasks, the models, a session and a small
API for engineers (probe a check now, take a backup, acknowledge an incident) that returns
readable objects."""

from __future__ import annotations

import code
import difflib
import getpass
import importlib.util
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.schedule import request_probe_now
from models.db import get_engine, session_scope
from models.tables import (
    Backup,
    Check,
    Escalation,
    Incident,
    IncidentEvent,
    Metric,
    Notification,
    Outcome,
    RestoreRun,
    Silence,
)

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult

T = TypeVar("T")
V = TypeVar("V")

CHEAT_SHEET = """\
eventops shell. Loaded: app, tasks, session, select, func, models (Check, Incident, ...)
  checks()                                every check and its state
  probe_now("stripe", wait=15)            probe it now; returns the new outcome
  outcomes("stripe", limit=10)            its latest outcomes
  incidents.open() / .all(limit=20) / .get(42) / .timeline(42)
  incidents.acknowledge(42, by="ana") / .resolve(42) / .reopen(42) / .note(42, "text")
  silence("check=stripe", for_="2h", comment="deploy") / silences() / unsilence(7)
  run_backup("hourly", wait=True) / backups()   a logical backup, through a worker
  run("escalations.sweep", wait=True)     any task by name; `tasks` lists them
  tasks.probes.dispatch_due.delay()       the task objects, by their names
  session.scalars(select(Incident).where(Incident.severity == "critical")).all()
Times are UTC; `session` autocommits each statement; help(incidents), help(run)."""

# The result of a task someone waits on: long enough for a sweep or a probe batch.
DEFAULT_WAIT_S = 60.0


def _me() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "shell"


def _local(at: datetime) -> datetime:
    # UTC, like the logs, Flower, the CLI and the notifications it is read next to.
    return at.astimezone(UTC)


def _hm(at: datetime | None) -> str:
    """09:41 today, else 2026-11-26 09:41 (UTC)."""
    if at is None:
        return "-"
    local = _local(at)
    today = _local(utcnow()).date()
    return f"{local:%H:%M}" if local.date() == today else f"{local:%Y-%m-%d %H:%M}"


def _hms(at: datetime | None) -> str:
    if at is None:
        return "-"
    local = _local(at)
    today = _local(utcnow()).date()
    return f"{local:%H:%M:%S}" if local.date() == today else f"{local:%Y-%m-%d %H:%M:%S}"


def _seconds(value: float) -> str:
    value = float(value)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:.0f}{unit}"
    return f"{value:g}s"


class Rows(list[T]):
    """A list that prints one item per line at the prompt."""

    def __repr__(self) -> str:
        return "\n".join(repr(item) for item in self) if self else "(none)"


# --- readable snapshots of rows --------------------------------------------------------------


def _snapshot(view: type[V], row: object, **given: Any) -> V:
    """A detached view of a row: each field from the row's attribute of that name, or given."""
    names = [f.name for f in fields(cast(Any, view))]
    return view(**{n: given[n] if n in given else getattr(row, n) for n in names})


@dataclass(frozen=True, repr=False)
class CheckView:
    id: int
    name: str
    status: str
    enabled: bool
    severity: str
    interval_s: float
    consecutive_failures: int
    last_checked_at: datetime | None
    last_latency_ms: float | None
    last_reason: str | None
    next_due_at: datetime

    def __repr__(self) -> str:
        state = self.status if self.enabled else "disabled"
        if self.status == "down" and self.consecutive_failures:
            count = self.consecutive_failures
            state += f" ({count} failure{'s' if count != 1 else ''})"
        parts = [f"<Check {self.name} {state} every {_seconds(self.interval_s)}"]
        if self.last_latency_ms is not None:
            parts.append(f", {self.last_latency_ms:.0f} ms")
        parts.append(f", checked {_hms(self.last_checked_at)}" if self.last_checked_at else "")
        parts.append(f": {self.last_reason}" if self.last_reason else "")
        return "".join(parts) + ">"


@dataclass(frozen=True, repr=False)
class OutcomeView:
    check: str
    slot: datetime
    observed_at: datetime
    status: str
    latency_ms: float | None
    http_status: int | None
    reason: str | None
    detail: str | None

    @property
    def ok(self) -> bool:
        return self.status == "up"

    def __repr__(self) -> str:
        bits = [f"<Outcome {self.check} {self.status} at {_hms(self.observed_at)}"]
        if self.http_status is not None:
            bits.append(f"HTTP {self.http_status}")
        if self.latency_ms is not None:
            bits.append(f"{self.latency_ms:.0f} ms")
        if self.reason:
            bits.append(f"{self.reason}" + (f" ({self.detail[:80]})" if self.detail else ""))
        return " ".join(bits) + ">"


@dataclass(frozen=True, repr=False)
class ProbeRequest:
    """A probe asked for but not (yet) seen: why, and what happens next."""

    check: str
    due_at: datetime
    status: str

    def __repr__(self) -> str:
        return f"<probe {self.check}: due since {_hms(self.due_at)}; {self.status}>"


@dataclass(frozen=True, repr=False)
class IncidentView:
    id: int
    severity: str
    status: str
    title: str
    opened_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    labels: dict[str, str]
    summary: str | None
    flapping: bool

    def __repr__(self) -> str:
        state = self.status
        if self.status == "acknowledged" and self.acknowledged_by:
            state += f" by {self.acknowledged_by}"
        if self.flapping:
            state += " (flapping)"
        tail = f" since {_hm(self.opened_at)}"
        if self.resolved_at is not None and self.status == "resolved":
            tail += f", resolved {_hm(self.resolved_at)}"
        return f"<Incident #{self.id} {self.severity} {state} {self.title!r}{tail}>"


@dataclass(frozen=True, repr=False)
class EventView:
    at: datetime
    kind: str
    actor: str
    detail: str | None

    def __repr__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"<{_hms(self.at)} {self.kind} by {self.actor}{detail}>"


@dataclass(frozen=True, repr=False)
class SilenceView:
    id: int
    matchers: list[str]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str

    def __repr__(self) -> str:
        starts = f" from {_hm(self.starts_at)}" if self.starts_at > utcnow() else ""
        comment = f" {self.comment!r}" if self.comment else ""
        return (
            f"<Silence #{self.id} {' '.join(self.matchers)}{starts} until {_hm(self.ends_at)}"
            f" by {self.created_by}{comment}>"
        )


@dataclass(frozen=True, repr=False)
class BackupView:
    id: int
    kind: str
    state: str
    verify_state: str
    snapshot_at: datetime | None
    started_at: datetime
    size_bytes: int | None
    duration_s: float | None
    path: str | None
    error: str | None
    note: str | None = None

    def __repr__(self) -> str:
        head = f"<Backup #{self.id} {self.kind} of {_hm(self.snapshot_at or self.started_at)}"
        bits = [f"{head} {self.state}"]
        size = f"{self.size_bytes / 1e6:.1f} MB" if self.size_bytes else ""
        took = f"in {self.duration_s:.1f} s" if self.duration_s is not None else ""
        if size or took:
            bits.append(f"{size} {took}".strip())
        bits.append(self.verify_state)
        if self.error:
            bits.append(f"error: {self.error[:80]}")
        if self.note:
            bits.append(self.note)
        return ", ".join(bits) + ">"


def _backup_view(row: Backup, note: str | None = None) -> BackupView:
    return _snapshot(BackupView, row, error=row.error or row.verify_error, note=note)


class SentTask:
    """A task sent to the broker; `.get(timeout)` waits for its result (kept 24 h)."""

    def __init__(self, name: str, result: AsyncResult, queue: str, keeps_result: bool) -> None:
        self.name, self.result, self.queue = name, result, queue
        self.keeps_result = keeps_result

    @property
    def id(self) -> str:
        return str(self.result.id)

    @property
    def state(self) -> str:
        return str(self.result.state) if self.keeps_result else "SENT"

    def get(self, timeout: float = DEFAULT_WAIT_S) -> Any:
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            return self.result.get(timeout=timeout, propagate=True)
        except CeleryTimeout:
            raise TimeoutError(
                f"{self.name}: no result within {timeout:g} s; is a worker consuming the "
                f"{self.queue!r} queue? (task id {self.id})"
            ) from None

    def __repr__(self) -> str:
        return f"<task {self.name} {self.id[:8]} on {self.queue}: {self.state}>"


# --- tasks ------------------------------------------------------------------------------------


def _app() -> Celery:
    from workers.app import app

    return app


def registered_tasks(app: Celery | None = None) -> dict[str, str]:
    """eventops' own tasks (not Celery's built-ins), each with the queue it is routed to."""
    app = app or _app()
    app.loader.import_default_modules()
    names = sorted(name for name in app.tasks if not name.startswith("celery."))
    return {name: app.amqp.router.route({}, name)["queue"].name for name in names}


class UnknownTask(LookupError):
    pass


def _known(name: str, app: Celery) -> str:
    """The queue of a registered task; UnknownTask naming the close matches otherwise."""
    known = registered_tasks(app)
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownTask(f"no task named {name!r}{hint}")
    return known[name]


def send(
    name: str,
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    keep_result: bool = False,
    app: Celery | None = None,
) -> SentTask:
    """Send a registered task by name. With keep_result the worker stores the result in the
    result backend even though the app ignores results by default, so the caller can wait."""
    app = app or _app()
    queue = _known(name, app)
    from uuid import uuid4

    from core.audit import audit

    task_id, arg_list = str(uuid4()), list(args)
    # Audited in the same transaction as the send: a trigger that never left is not recorded.
    with session_scope() as session:
        audit(
            session,
            _me(),
            "task.run",
            f"task:{name}",
            {"task_id": task_id, "queue": queue, "args": arg_list, "kwargs": kwargs or {}},
        )
        result = app.send_task(
            name,
            args=arg_list,
            kwargs=kwargs or {},
            ignore_result=not keep_result,
            task_id=task_id,
        )
    return SentTask(name, result, queue, keep_result)


def _wait_seconds(wait: bool | float) -> float:
    return DEFAULT_WAIT_S if wait is True else float(wait)


def run(name: str, *args: Any, wait: bool | float = False, **kwargs: Any) -> Any:
    """Trigger any eventops task by name: run("escalations.sweep", wait=True).

    Positional and keyword arguments go to the task (JSON values only). Without `wait` it
    returns the sent task (`.get(timeout)` waits later); with wait=True (60 s) or a number of
    seconds it returns the task's result, re-raises its error, or raises TimeoutError.
    """
    sent = send(name, args, kwargs, keep_result=True)
    return sent.get(_wait_seconds(wait)) if wait else sent


class TaskGroup:
    """Tasks by name: `tasks.probes.dispatch_due.delay()`, or `tasks["backups.dump"]`."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._routes = registered_tasks(app)
        groups: dict[str, dict[str, Any]] = {}
        for name in self._routes:
            prefix, _, short = name.rpartition(".")
            groups.setdefault(prefix or name, {})[short] = app.tasks[name]
        for prefix, members in groups.items():
            setattr(self, prefix, _Members(prefix, members))

    def __getitem__(self, name: str) -> Any:
        _known(name, self._app)
        return self._app.tasks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __repr__(self) -> str:
        width = max((len(n) for n in self._routes), default=0)
        return "\n".join(f"{n:<{width}}  queue {q}" for n, q in self._routes.items())


class _Members:
    def __init__(self, prefix: str, members: dict[str, Any]) -> None:
        self._prefix = prefix
        self.__dict__.update(members)

    def __repr__(self) -> str:
        names = sorted(k for k in self.__dict__ if not k.startswith("_"))
        return f"<tasks {self._prefix}: {', '.join(names)}>"


# --- checks -----------------------------------------------------------------------------------


def _check_named(session: Session, name: str) -> Check:
    check = session.scalar(select(Check).where(Check.name == name))
    if check is None:
        names = list(session.scalars(select(Check.name)))
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LookupError(f"no check named {name!r}{hint}")
    return check


def checks() -> Rows[CheckView]:
    """Every check with its state, by name."""
    with session_scope() as session:
        return Rows(
            _snapshot(CheckView, c) for c in session.scalars(select(Check).order_by(Check.name))
        )


def outcomes(name: str, limit: int = 10) -> Rows[OutcomeView]:
    """A check's latest outcomes, newest first."""
    with session_scope() as session:
        check = _check_named(session, name)
        rows = session.scalars(
            select(Outcome)
            .where(Outcome.check_id == check.id)
            .order_by(Outcome.slot.desc())
            .limit(limit)
        )
        return Rows(_snapshot(OutcomeView, o, check=name) for o in rows)


def _consumed_queues(app: Celery) -> set[str] | None:
    """The queues running workers consume; None when the broker cannot be reached."""
    from kombu.exceptions import OperationalError

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=3)
            replies = app.control.inspect(timeout=1.0, connection=conn).active_queues() or {}
    except (OperationalError, OSError):
        return None
    return {queue["name"] for queues in replies.values() for queue in queues or ()}


def probe_now(name: str, wait: float = 15.0) -> OutcomeView | ProbeRequest:
    """Make a check due now. If workers consume the pipeline and probes queues, nudge the
    dispatcher (no need to wait for beat's tick) and wait up to `wait` seconds for the new
    outcome; otherwise (or with wait=0) say it is queued."""
    app = _app()
    marked = utcnow()
    with session_scope() as session:
        check = _check_named(session, name)
        check_id, enabled = check.id, check.enabled
        request_probe_now(session, name, now=marked)
    if not enabled:
        return ProbeRequest(name, marked, "but it is disabled in the config, so nothing probes it")
    if not wait:
        return ProbeRequest(name, marked, "the next dispatch tick probes it")
    consumed = _consumed_queues(app)
    if consumed is None:
        return ProbeRequest(name, marked, "the broker is unreachable; beat dispatches it later")
    missing = sorted({"pipeline", "probes"} - consumed)
    if missing:
        return ProbeRequest(
            name, marked, f"queued: no running worker consumes {' and '.join(missing)}"
        )
    deadline = time.monotonic() + wait
    nudge_at = 0.0
    while True:
        if time.monotonic() >= nudge_at:
            # The dispatch tick is idempotent (claims use SKIP LOCKED): sending it again
            # only helps when the check was still in flight at the first nudge.
            app.send_task("probes.dispatch_due", expires=30)
            nudge_at = time.monotonic() + 5
        with session_scope() as session:
            outcome = session.scalar(
                select(Outcome)
                .where(Outcome.check_id == check_id, Outcome.slot >= marked)
                .order_by(Outcome.slot.desc())
                .limit(1)
            )
            if outcome is not None:
                return _snapshot(OutcomeView, outcome, check=name)
        if time.monotonic() >= deadline:
            return ProbeRequest(
                name, marked, f"no outcome within {wait:g} s yet; outcomes() shows it later"
            )
        time.sleep(0.25)


# --- incidents --------------------------------------------------------------------------------


class Incidents:
    """Incidents: open(), all(limit), get(id), timeline(id), acknowledge, resolve, reopen, note.

    Changes go through core.incidents, as the CLI's do: each is an event on the timeline, and
    an acknowledgement stops pending pages. They return the incident as it is afterwards.
    """

    def open(self) -> Rows[IncidentView]:
        """Unresolved incidents (open or acknowledged), newest first."""
        with session_scope() as session:
            rows = session.scalars(
                select(Incident)
                .where(Incident.status != "resolved")
                .order_by(Incident.opened_at.desc())
            )
            return Rows(_snapshot(IncidentView, i) for i in rows)

    def all(self, limit: int = 20) -> Rows[IncidentView]:
        """The latest incidents, resolved ones too, newest first."""
        with session_scope() as session:
            rows = session.scalars(
                select(Incident).order_by(Incident.opened_at.desc()).limit(limit)
            )
            return Rows(_snapshot(IncidentView, i) for i in rows)

    def get(self, incident_id: int) -> IncidentView:
        from core.incidents import IncidentNotFound

        with session_scope() as session:
            row = session.get(Incident, incident_id)
            if row is None:
                raise IncidentNotFound(f"no incident #{incident_id}")
            return _snapshot(IncidentView, row)

    def timeline(self, incident_id: int) -> Rows[EventView]:
        """Every transition, page and note of an incident, oldest first."""
        self.get(incident_id)
        with session_scope() as session:
            rows = session.scalars(
                select(IncidentEvent)
                .where(IncidentEvent.incident_id == incident_id)
                .order_by(IncidentEvent.at, IncidentEvent.id)
            )
            return Rows(_snapshot(EventView, e) for e in rows)

    def acknowledge(self, incident_id: int, by: str | None = None) -> IncidentView:
        """Someone is on it: its pending pages and reminders stop."""
        from core import incidents as lifecycle

        changed = lifecycle.acknowledge(incident_id, by or _me())
        return self._after(incident_id, changed, "it was not open")

    def resolve(
        self, incident_id: int, by: str | None = None, why: str = "resolved by hand"
    ) -> IncidentView:
        """Resolve by hand; if the problem persists, it reopens."""
        from core import incidents as lifecycle

        changed = lifecycle.resolve(incident_id, by or _me(), why=why)
        return self._after(incident_id, changed, "it was already resolved")

    def reopen(
        self, incident_id: int, by: str | None = None, why: str = "reopened by hand"
    ) -> IncidentView:
        """Reopen a resolved incident that was not fixed after all; it pages again."""
        from core import incidents as lifecycle

        changed = lifecycle.reopen(incident_id, by or _me(), why=why)
        return self._after(incident_id, changed, "it is not resolved")

    def note(
        self, incident_id: int, text: str, by: str | None = None, public: bool = False
    ) -> EventView:
        """Add a note to the timeline; public=True also sends it as a status update to the
        stakeholders of its policy."""
        from core import incidents as lifecycle

        lifecycle.note(incident_id, text, by or _me(), public=public)
        return self.timeline(incident_id)[-1]

    def _after(self, incident_id: int, changed: bool, unchanged: str) -> IncidentView:
        view = self.get(incident_id)
        if not changed:
            print(f"#{incident_id} unchanged: {unchanged}")
        return view

    def __repr__(self) -> str:
        return (
            "<incidents: open(), all(limit=20), get(id), timeline(id), acknowledge(id, by=),"
            " resolve(id, by=), reopen(id, by=), note(id, text, by=, public=False)>"
        )


# --- silences ---------------------------------------------------------------------------------


def silence(
    *matchers: str, for_: str | float | timedelta = "1h", comment: str = "", by: str | None = None
) -> SilenceView:
    """Mute pages for incidents matching every matcher (check=stripe, group=~pay.*,
    severity!=info) for a while; incidents still open and resolve."""
    from core.silences import create_silence
    from models.config import parse_duration

    if not matchers:
        raise ValueError('give at least one matcher, e.g. silence("check=stripe", for_="2h")')
    length = parse_duration(for_)
    with session_scope() as session:
        row = create_silence(session, matchers, by=by or _me(), comment=comment, duration=length)
        return _snapshot(SilenceView, row)


def silences() -> Rows[SilenceView]:
    """Active and upcoming silences, ending soonest first."""
    with session_scope() as session:
        rows = session.scalars(
            select(Silence).where(Silence.ends_at > utcnow()).order_by(Silence.ends_at)
        )
        return Rows(_snapshot(SilenceView, s) for s in rows)


def unsilence(silence_id: int) -> bool:
    """End a silence now; pages it held go out on the next sweep. False if it was not active."""
    from core.silences import expire_silence

    with session_scope() as session:
        return expire_silence(session, silence_id, by=_me())


# --- backups ----------------------------------------------------------------------------------


def backups(limit: int = 20) -> Rows[BackupView]:
    """The latest backups (not deleted ones), newest first."""
    with session_scope() as session:
        rows = session.scalars(
            select(Backup)
            .where(Backup.deleted_at.is_(None))
            .order_by(Backup.started_at.desc())
            .limit(limit)
        )
        return Rows(_backup_view(b) for b in rows)


def run_backup(kind: str = "hourly", wait: bool | float = False) -> Any:
    """Take this hour's (or today's, kind="daily") logical backup through a worker on the
    slow queue. With wait=True (up to an hour) or a number of seconds, wait for it and
    return the backup; without, return the sent task."""
    from tasks.backups import dump

    if kind not in ("hourly", "daily"):
        raise ValueError('kind is "hourly" or "daily"')
    queue = _app().amqp.router.route({}, dump.name)["queue"].name
    sent = SentTask(dump.name, dump.apply_async(args=[kind], ignore_result=False), queue, True)
    if not wait:
        return sent
    result = sent.get(3600.0 if wait is True else float(wait))
    backup_id = result.get("backup_id") if isinstance(result, dict) else None
    if backup_id is None:
        return result
    note = None
    if "skipped" in result:
        note = f"skipped: {result['skipped']}"
    elif "failed" in result:
        note = f"failed: {result['failed']}"
    with session_scope() as session:
        row = session.get(Backup, backup_id)
        return _backup_view(row, note) if row is not None else result


# --- the shell --------------------------------------------------------------------------------


def ad_hoc_session() -> Session:
    """A session for ad-hoc queries. Each statement commits at once, so a forgotten
    transaction never sits idle holding locks that block migrations or maintenance."""
    return Session(get_engine().execution_options(isolation_level="AUTOCOMMIT"))


def build_namespace() -> dict[str, Any]:
    """What `eventops shell` puts at the prompt."""
    app = _app()
    namespace: dict[str, Any] = {
        "app": app,
        "tasks": TaskGroup(app),
        "session": ad_hoc_session(),
        "select": select,
        "func": func,
        "checks": checks,
        "outcomes": outcomes,
        "probe_now": probe_now,
        "incidents": Incidents(),
        "silence": silence,
        "silences": silences,
        "unsilence": unsilence,
        "run_backup": run_backup,
        "backups": backups,
        "run": run,
        "utcnow": utcnow,
        "timedelta": timedelta,
    }
    for model in (
        Check,
        Outcome,
        Incident,
        IncidentEvent,
        Escalation,
        Notification,
        Silence,
        Backup,
        RestoreRun,
        Metric,
    ):
        namespace[model.__name__] = model
    return namespace


def start_shell(namespace: dict[str, Any] | None = None, banner: str = CHEAT_SHEET) -> None:
    """IPython when it is installed (`pip install ipython`), else Python's own REPL."""
    namespace = namespace if namespace is not None else build_namespace()
    # On stdout, not the REPL's stderr: the cheat sheet is what the user asked for.
    print(banner, flush=True)
    try:
        if importlib.util.find_spec("IPython") is not None:
            from IPython import start_ipython

            start_ipython(argv=[], user_ns=namespace, display_banner=False)
        else:
            _prepare_plain_repl(namespace)
            code.interact(banner="", local=namespace, exitmsg="")
    finally:
        namespace["session"].close()


def _prepare_plain_repl(namespace: dict[str, Any]) -> None:
    """At a terminal: tab completion of the namespace. Fed by a pipe: no prompts, so
    `printf 'print(len(incidents.open()))\\n' | eventops shell` prints just the answers."""
    if not sys.stdin.isatty():
        sys.ps1 = sys.ps2 = ""
        return
    try:
        import readline
        import rlcompleter
    except ImportError:  # no readline on this platform: the REPL works without completion
        return
    readline.set_completer(rlcompleter.Completer(namespace).complete)
    readline.parse_and_bind("tab: complete")
