"""Real eventops processes for tests: a worker (or Flower) started through the CLI, stopped
with a warm shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from celery import Celery

ROOT = Path(__file__).resolve().parent.parent


def eventops(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("eventops")
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "workers.cli"]
    return [*prefix, *args]


def stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        child.wait(20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@contextlib.contextmanager
def running_worker(
    env: dict[str, str],
    log: Path,
    queues: str = "pipeline,probes,escalations",
    stdout: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker on `queues` writing stderr (its log) to `log` and stdout there too unless
    `stdout` names a file of its own; ready when it answers a ping."""
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    with open(log, "wb") as err, open(stdout or os.devnull, "wb") as out:
        child = subprocess.Popen(
            eventops("worker", "-Q", queues, "-c", "1", "-n", name),
            env=env,
            cwd=ROOT,
            stdout=out if stdout else err,
            stderr=err,
        )
    try:
        # An app of our own for the ping, so this process's configured app is left alone.
        with Celery(broker=env["EVENTOPS_BROKER_URL"]) as probe:
            deadline = time.monotonic() + 60
            while not probe.control.ping(timeout=0.5):
                assert child.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
        yield child
    finally:
        stop(child)


@dataclass
class RunningFlower:
    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def running_flower(env: dict[str, str], log: Path) -> Iterator[RunningFlower]:
    """`eventops flower` on a free port of 127.0.0.1, appending its output to `log`; ready
    when it answers HTTP (a 401 counts)."""
    import httpx

    port = free_port()
    with open(log, "ab") as out:
        child = subprocess.Popen(
            eventops("flower", "--port", str(port), "--address", "127.0.0.1"),
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert child.poll() is None, log.read_text()[-3000:]
        try:
            httpx.get(base, timeout=2)
        except httpx.TransportError:
            return False
        return True

    try:
        wait_for(answers, 60, "Flower to listen")
        yield RunningFlower(base, child)
    finally:
        stop(child)


def wait_for(condition: object, timeout: float = 60, what: str = "condition") -> None:
    """Poll `condition()` until it is truthy; fail with `what` after `timeout` seconds."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(app: object) -> Iterator[str]:
    """Serve an ASGI app with a real uvicorn on a free port, in a thread; yields its base URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
