"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dashboard_server import Dashboard, running_dashboard


@pytest.fixture(scope="module")
def dashboard(
    database_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    """A real dashboard server for one test module (a module overrides it for its own data)."""
    with running_dashboard(database_url, broker_url, tmp_path_factory.mktemp("dash")) as server:
        yield server
