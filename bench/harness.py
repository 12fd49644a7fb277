"""What the performance benchmarks (issue 9) start on loopback, and stop again.

A scratch database on the local Postgres (created and dropped), a private Redis
(workers/embedded.py), nginx from Debian's packages as the probe target, Prometheus
blackbox_exporter, real eventops workers started through the CLI, and a webhook receiver
that stamps each arrival. Every piece is a context manager, so an interrupted run leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import psycopg
from sqlalchemy import make_url

from workers.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def machine() -> str:
    """One line naming the machine and its load, for RESULTS.md."""
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {psutil.cpu_count()}-core "
        f"{platform.machine()} ({memory:.0f} GiB), Python {platform.python_version()}, "
        f"load average {load()}"
    )


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def apt_install(binary: str, package: str) -> str:
    """The path of `binary`, installing its Debian package first when it is missing."""
    found = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if found:
        return found
    print(f"installing {package} (apt-get) ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, capture_output=True)
    found = shutil.which(binary) or f"/usr/sbin/{binary}"
    if not Path(found).exists():
        raise SystemExit(f"{package} installed but {binary} not found")
    return found


def _libpq(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    params: dict[str, Any] = {
        "host": parsed.host or parsed.query.get("host") or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "dbname": parsed.database or "postgres",
        "autocommit": True,
    }
    if parsed.password:
        params["password"] = parsed.password
    return params


def libpq(url: str) -> dict[str, Any]:
    """psycopg connect() arguments for a SQLAlchemy URL."""
    return _libpq(url)


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A migrated scratch database on EVENTOPS_BENCH_DATABASE_URL's server (else the local
    Postgres); dropped at the end. Yields its SQLAlchemy URL."""
    from core.migrate import upgrade

    server = os.environ.get("EVENTOPS_BENCH_DATABASE_URL", DEFAULT_SERVER)
    name = f"eventops_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**_libpq(server)) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        from models import db

        if db._engine is not None:
            db._engine.dispose()
        with psycopg.connect(**_libpq(server)) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    redis = EmbeddedRedis(workdir / "redis").start()
    try:
        yield redis.url
    finally:
        redis.stop()


class Nginx:
    """nginx serving a tiny 200 page on two ports: `keepalive` keeps connections open, `close`
    closes each after one response (every probe then opens a new connection, as
    blackbox_exporter's do), plus /fail answering 500 on both."""

    def __init__(self, workdir: Path):
        self.workdir = workdir / "nginx"
        self.keepalive_port = free_port()
        self.close_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def url(self, keepalive: bool, path: str = "/") -> str:
        port = self.keepalive_port if keepalive else self.close_port
        return f"http://127.0.0.1:{port}{path}"

    def __enter__(self) -> Nginx:
        binary = apt_install("nginx", "nginx-light")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        locations = """
            location = /fail { return 500 "down\\n"; }
            location / { return 200 "ok\\n"; }
        """
        conf = f"""
            worker_processes 1;
            pid {self.workdir}/nginx.pid;
            error_log {self.workdir}/logs/error.log warn;
            events {{ worker_connections 4096; }}
            http {{
                access_log off;
                client_body_temp_path {self.workdir}/body;
                default_type text/plain;
                keepalive_requests 1000000;
                server {{
                    listen 127.0.0.1:{self.keepalive_port} backlog=4096;
                    keepalive_timeout 65;
                    {locations}
                }}
                server {{
                    listen 127.0.0.1:{self.close_port} backlog=4096;
                    keepalive_timeout 0;
                    {locations}
                }}
            }}
        """
        (self.workdir / "nginx.conf").write_text(conf)
        self._process = subprocess.Popen(
            [
                binary,
                "-p",
                str(self.workdir),
                "-c",
                str(self.workdir / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.keepalive_port, self._process)
        wait_for_port(self.close_port, self._process)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            stop_process(self._process)


class Blackbox:
    """Prometheus blackbox_exporter (Debian package) with an http_2xx module of our own."""

    MODULE = "http_2xx"

    def __init__(self, workdir: Path):
        self.workdir = workdir / "blackbox"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def probe_url(self, target: str) -> str:
        return f"http://127.0.0.1:{self.port}/probe?target={target}&module={self.MODULE}"

    def __enter__(self) -> Blackbox:
        binary = apt_install("prometheus-blackbox-exporter", "prometheus-blackbox-exporter")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "blackbox.yml"
        config.write_text(
            "modules:\n"
            f"  {self.MODULE}:\n"
            "    prober: http\n"
            "    timeout: 5s\n"
            "    http:\n"
            "      method: GET\n"
            "      valid_status_codes: [200]\n"
            "      preferred_ip_protocol: ip4\n"
        )
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self._process)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            stop_process(self._process)

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid


def wrk(url: str, seconds: int, connections: int = 64, threads: int = 2) -> float:
    """Requests per second `wrk` reached against `url` (Debian's wrk)."""
    binary = apt_install("wrk", "wrk")
    out = subprocess.run(
        [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    errors = [line for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line]
    if errors:
        print("  wrk:", "; ".join(e.strip() for e in errors))
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(f"wrk printed no rate:\n{out}")


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"process {process.args!r} did not listen on {port}")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes], grace: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def write_config(
    path: Path,
    checks: Sequence[dict[str, Any]],
    channels: Sequence[dict[str, Any]] = (),
    policies: dict[str, Any] | None = None,
) -> Path:
    """An eventops config file (JSON is valid YAML) that may probe loopback."""
    config: dict[str, Any] = {
        "platform_url": "http://127.0.0.1:9",
        "network": {"allow_internal": ["127.0.0.0/8"]},
        "checks": list(checks),
        "channels": list(channels),
    }
    if policies is not None:
        config["policies"] = policies
    path.write_text(json.dumps(config, indent=1))
    return path


def eventops(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("eventops")
    prefix = [str(script)] if script.exists() else [sys.executable, "-m", "workers.cli"]
    return [*prefix, *args]


def bench_env(database_url: str, broker_url: str, config: Path, workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "EVENTOPS_DATABASE_URL": database_url,
        "EVENTOPS_BROKER_URL": broker_url,
        "EVENTOPS_CONFIG_FILE": str(config),
        "EVENTOPS_VAR_DIR": str(workdir / "var"),
    }


def migrate(env: dict[str, str]) -> str:
    done = subprocess.run(eventops("migrate"), env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"eventops migrate failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


@contextlib.contextmanager
def worker(
    env: dict[str, str], workdir: Path, concurrency: int, queues: str = "probes,pipeline"
) -> Iterator[psutil.Process]:
    """A real eventops worker (prefork, `concurrency` pool processes); ready when every pool
    process answers. Yields the main process (its children are the pool)."""
    from celery import Celery

    log = workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
    name = f"bench-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            eventops("worker", "-Q", queues, "-c", str(concurrency), "-n", name, "-l", "WARNING"),
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with Celery(broker=env["EVENTOPS_BROKER_URL"]) as probe:
            deadline = time.monotonic() + 90
            # This worker's own answer: another bench worker may already be running.
            while not probe.control.ping(destination=[name], timeout=0.5):
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
        yield psutil.Process(child.pid)
    finally:
        stop_process(child, grace=30)


def tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def rss_mb(processes: Sequence[psutil.Process]) -> float:
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


class StampingReceiver:
    """A webhook receiver that records when each JSON POST arrived (time.time())."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.time()
                with receiver._lock:
                    receiver.arrivals.append((arrived, json.loads(body or b"{}")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def apprise_url(self) -> str:
        return f"json://127.0.0.1:{self._server.server_address[1]}/hook"

    def snapshot(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return list(self.arrivals)

    def __enter__(self) -> StampingReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
