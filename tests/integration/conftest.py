"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dashboard_server import Dashboard, running_dashboard


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
