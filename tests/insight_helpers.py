"""Helpers for the insight tests: a real uvicorn in a thread, and a platform database."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import make_url

from core.backups.tools import Conn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app with a real uvicorn on a free port, in a thread; yield its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def platform_database(server_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server for the platform's tables; its URL."""
    name = f"eventops_platform_{uuid.uuid4().hex[:10]}"
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    admin = Conn.from_url(server_url).with_db("postgres")
    with admin.connect() as db:
        db.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        with admin.connect() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def execute(url: str, sql: str, params: Any = None) -> None:
    with Conn.from_url(url).connect() as db:
        db.execute(sql, params)


def copy_rows(url: str, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    with (
        Conn.from_url(url).connect() as db,
        db.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
