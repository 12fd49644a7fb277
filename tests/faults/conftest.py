"""Fixtures of the fault tests: a cluster of real processes that is always stopped."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Cluster, base_env


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keeps each phase's report on the test, so the fixture knows whether the test failed.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, clean_db: str, clean_redis: str, tmp_path: Path
) -> Iterator[Callable[[Path], Cluster]]:
    """`cluster(config_path)` gives a Cluster on this test's Postgres and Redis; every
    process it started is stopped afterwards, and its logs are printed if the test failed."""
    made: list[Cluster] = []

    def make(config: Path) -> Cluster:
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        env = base_env(clean_db, clean_redis, config, tmp_path / "var")
        made.append(Cluster(env, logs))
        return made[-1]

    try:
        yield make
    finally:
        for each in made:
            each.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for each in made:
                print(each.tails())
