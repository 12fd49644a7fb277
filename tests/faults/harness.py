"""What the fault tests share: real worker and beat processes, a counting HTTP target, and
the checks that every claimed slot got exactly one outcome."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import psutil
import redis
import yaml
from celery import Celery
from sqlalchemy import func, select

from models.db import session_scope
from models.tables import Check, Outcome
from workers.task_metrics import TASK_KEY_PREFIX

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def wait_for(what: str, probe: Callable[[], T], timeout: float = 60.0, every: float = 0.25) -> T:
    """Poll real processes' effects; they run on the real clock, so every wait has a bound."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


class CountingTarget:
    """A local HTTP target that counts the requests it gets per path.

    `delay` holds every answer that long and `status` is what it answers (paths in
    `failing` answer 503); all can be changed while it runs. The DemoPlatform has no
    request counter, and "the target was probed once per outcome" is the point of some of
    these tests.
    """

    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.delay, self.status = delay, status
        self.failing: set[str] = set()
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with target._lock:
                    target.hits[self.path] += 1
                    delay, status = target.delay, target.status
                    if self.path in target.failing:
                        status = 503
                time.sleep(delay)
                body = json.dumps({"path": self.path}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            # The default backlog of 5 overflows when a few fresh pool processes connect at
            # once; the dropped SYN is retried after 1 s and a healthy check times out.
            request_queue_size = 128

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.hits)

    def __enter__(self) -> CountingTarget:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def write_config(
    path: Path,
    checks: list[dict[str, Any]],
    channels: list[dict[str, Any]] | None = None,
    policies: dict[str, Any] | None = None,
) -> Path:
    data: dict[str, Any] = {
        "platform_url": "http://127.0.0.1:9",
        "checks": checks,
        "network": {"allow_internal": ["127.0.0.0/8"]},
    }
    if channels:
        data["channels"] = channels
    if policies:
        data["policies"] = policies
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def http_checks(url: str, count: int, interval: timedelta, timeout: str) -> list[dict[str, Any]]:
    return [
        {"name": f"c{i:02d}", "url": url, "interval": f"{interval.seconds}s", "timeout": timeout}
        for i in range(count)
    ]


class Cluster:
    """Real eventops processes, each in a session of its own so that stopping one also
    stops its prefork children; `stop()` leaves nothing running, whatever happened."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> int:
        """`eventops <args>` as process `name`; `args` may instead start with `-c CODE`."""
        argv = (
            [sys.executable, *args]
            if args[0] == "-c"
            else [sys.executable, "-m", "workers.cli", *args]
        )
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (owned by the child)
        self.running[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self.running[name].pid

    def pool_pids(self, name: str) -> set[int]:
        """The live prefork pool processes of worker `name` (a killed one stays a zombie
        until billiard reaps it)."""
        pids = set()
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.running[name].pid).children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    if child.status() != psutil.STATUS_ZOMBIE:
                        pids.add(child.pid)
        return pids

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def terminate(self, name: str, wait: float = 30.0) -> int | None:
        """SIGTERM (Celery's warm shutdown) and wait; SIGKILL the group if it hangs."""
        child = self.running[name]
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(wait)
            except subprocess.TimeoutExpired:
                self._kill_group(child)
        self._kill_group(child)  # stray pool children of a parent that died first
        return child.returncode

    def stop(self) -> None:
        for child in self.running.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(max(deadline - time.monotonic(), 0.1))
            self._kill_group(child)

    @staticmethod
    def _kill_group(child: subprocess.Popen[bytes]) -> None:
        # The group is the session this Popen created: only our own processes are in it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(5)

    def tails(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.logs.glob("*.log"))
        )


def base_env(database_url: str, broker_url: str, config: Path, var_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("EVENTOPS_") or key.startswith("EVENTOPS_TEST_")
    }
    env.update(
        {
            "EVENTOPS_DATABASE_URL": database_url,
            "EVENTOPS_BROKER_URL": broker_url,
            "EVENTOPS_CONFIG_FILE": str(config),
            "EVENTOPS_VAR_DIR": str(var_dir),
        }
    )
    return env


def control_app(broker_url: str) -> Celery:
    """A bare Celery client on the test's broker: publishes and inspects like an operator."""
    return Celery(
        "faults",
        broker=broker_url,
        set_as_current=False,
        config_source={
            "task_serializer": "json",
            "accept_content": ["json"],
            "broker_connection_retry_on_startup": True,
        },
    )


def busy_pool_pids(app: Celery, node: str, task: str) -> set[int]:
    """Pool processes of worker `node` (e.g. "probes") executing `task` right now, by the
    worker's own account (asked of that node alone, so the answer comes at once)."""
    destination = f"{node}@{socket.gethostname()}"
    active = app.control.inspect([destination], timeout=1.0, limit=1).active() or {}
    return {
        int(request["worker_pid"])
        for requests in active.values()
        for request in requests
        if request.get("name") == task and request.get("worker_pid")
    }


def queue_length(broker_url: str, *queues: str) -> int:
    client = redis.Redis.from_url(broker_url)
    try:
        return sum(int(client.llen(q)) for q in queues)
    finally:
        client.close()


def inflight() -> list[tuple[str, datetime | None]]:
    with session_scope() as session:
        rows = session.execute(
            select(Check.name, Check.inflight_slot).where(Check.inflight_slot.is_not(None))
        )
        return [(name, slot) for name, slot in rows]


def outcome_slots() -> dict[str, list[datetime]]:
    with session_scope() as session:
        rows = session.execute(
            select(Check.name, Outcome.slot)
            .join(Check, Check.id == Outcome.check_id)
            .order_by(Check.name, Outcome.slot)
        ).all()
    slots: dict[str, list[datetime]] = defaultdict(list)
    for name, slot in rows:
        slots[name].append(slot)
    return dict(slots)


def outcome_statuses() -> Counter[str]:
    with session_scope() as session:
        return Counter(
            dict(
                session.execute(select(Outcome.status, func.count()).group_by(Outcome.status)).all()
            )
        )


_DISPATCHED = re.compile(r"dispatched (\d+) due slots in \d+ batches \((\d+) sent again\)")


def claimed_in_logs(texts: Iterable[str]) -> int:
    """Slots the dispatch ticks claimed for the first time, from the line a worker logs for
    each tick that handed out work (tasks/probes.py: "dispatched 12 due slots in 1 batches
    (0 sent again)"). A slot sent again after its lease ran out is claimed twice but is
    still one slot, owed one outcome."""
    ticks = [m.groups() for text in texts for m in _DISPATCHED.finditer(text)]
    assert ticks, "no dispatch line in the worker logs: did its format change?"
    return sum(int(claimed) - int(resent) for claimed, resent in ticks)


def wait_for_ticks(procs: Cluster, timeout: float = 60.0) -> None:
    """Until a dispatch tick ran to its end on a worker: beat and a worker are up. Read from
    the task metrics workers keep in Redis, since an idle tick logs nothing at INFO."""
    client = redis.Redis.from_url(procs.env["EVENTOPS_BROKER_URL"])
    try:
        wait_for(
            "the first dispatch tick",
            lambda: client.hget(TASK_KEY_PREFIX + "probes.dispatch_due", "count"),
            timeout,
        )
    finally:
        client.close()


def load_staggered(procs: Cluster, checks: list[dict[str, Any]], groups: int) -> None:
    """Load the checks into Postgres in `groups` steps about 2 s apart, so their slots are
    spread over the interval and some batch is in flight at most moments.

    Call once ticks flow (a check is first due when loaded, and a slot claimed late skips
    the next one by design), with the processes already running on the full config file:
    each step is `eventops migrate` on a config file of its own.
    """
    per_group = len(checks) // groups
    config = Path(procs.env["EVENTOPS_CONFIG_FILE"])
    for group in range(1, groups + 1):
        loaded = checks[: group * per_group] if group < groups else checks
        stage = write_config(config.with_name(f"stage-{group}.yaml"), loaded)
        out = procs.run("migrate", env={"EVENTOPS_CONFIG_FILE": str(stage)})
        assert f"{len(loaded)} checks loaded" in out
        time.sleep(1.0)  # with the ~1 s the command takes


def settle(broker_url: str, timeout: float = 30.0) -> None:
    """After beat stopped: wait until nothing is queued and no slot is in flight, twice in a
    row a second apart (a tick still in the queue may claim one more round)."""

    def quiet() -> bool:
        return not inflight() and queue_length(broker_url, "probes", "pipeline") == 0

    def quiet_twice() -> bool:
        if not quiet():
            return False
        time.sleep(1.0)
        return quiet()

    try:
        wait_for("every claimed slot to get its outcome", quiet_twice, timeout=timeout)
    except AssertionError:
        raise AssertionError(
            f"slots still in flight after {timeout:g} s: {inflight()}; queued: "
            f"{queue_length(broker_url, 'probes', 'pipeline')}"
        ) from None


def gaps(slots: dict[str, list[datetime]], interval: timedelta) -> dict[str, list[datetime]]:
    """Per check, the slots missing between its first and last outcome."""
    missing: dict[str, list[datetime]] = {}
    for name, seen in slots.items():
        holes = []
        for before, after in itertools.pairwise(seen):
            at = before + interval
            while at < after:
                holes.append(at)
                at += interval
        if holes:
            missing[name] = holes
    return missing


def latest_outcomes() -> dict[str, datetime]:
    with session_scope() as session:
        rows = session.execute(
            select(Check.name, Outcome.observed_at)
            .join(Check, Check.id == Outcome.check_id)
            .order_by(Outcome.observed_at)
        ).all()
    latest: dict[str, datetime] = {}
    for name, at in rows:
        latest[name] = at
    return latest


def worst_silence() -> tuple[str, timedelta]:
    """The longest time any check went without an outcome (by observation time)."""
    with session_scope() as session:
        rows = session.execute(
            select(Check.name, Outcome.observed_at)
            .join(Check, Check.id == Outcome.check_id)
            .order_by(Check.name, Outcome.observed_at)
        ).all()
    worst = ("", timedelta(0))
    for (name, before), (other, after) in itertools.pairwise(rows):
        if name == other and after - before > worst[1]:
            worst = (name, after - before)
    return worst
