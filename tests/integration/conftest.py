"""Fixtures shared by the integration tests."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.dashboard_server import Dashboard, running_dashboard
from tests.hostile_servers import Handler, RawServer, ServerProcess

S = TypeVar("S", RawServer, ServerProcess)


@pytest.fixture(scope="module")
def dashboard_database(database_url: str) -> str:
    """The database the module's dashboard reads; a module overrides it for its own data."""
    return database_url


@pytest.fixture(scope="module")
def dashboard(
    dashboard_database: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    """A real dashboard server for one test module."""
    with running_dashboard(
        dashboard_database, broker_url, tmp_path_factory.mktemp("dash")
    ) as server:
        yield server


def _started(kind: Callable[..., S]) -> Iterator[Callable[..., S]]:
    """`start(handler, tls=None, host="127.0.0.1")` for servers of `kind`, each closed (its
    threads or process ended) at teardown."""
    servers: list[S] = []

    def start(handler: Handler, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> S:
        server = kind(handler, tls, host)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    """Start raw-socket servers (tests/hostile_servers.py) for one test: `serve(handler,
    tls=None, host="127.0.0.1")`; all of them are stopped and their threads joined at teardown."""
    yield from _started(RawServer)


@pytest.fixture
def serve_apart() -> Iterator[Callable[..., ServerProcess]]:
    """As `serve`, each server in a child process of its own (for tests that time probes)."""
    yield from _started(ServerProcess)
