"""Real services for the tests: the ones CI names, else embedded ones started here.

EVENTOPS_TEST_DATABASE_URL / EVENTOPS_TEST_BROKER_URL name a Postgres server and a Redis
database to use. Without them the session starts an embedded PostgreSQL and Redis, so
`make test` passes on a machine with neither. Each session works in a database of its own,
created and migrated here and dropped at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import make_url, text

from core.migrate import upgrade
from models import db
from models.config import EventopsConfig, parse_config
from models.tables import Base
from tests.faults.harness import Cluster, base_env
from workers.embedded import EmbeddedPostgres, EmbeddedRedis


def _libpq_kwargs(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {
        "user": parsed.username,
        "dbname": parsed.database,
        "host": parsed.host or parsed.query.get("host"),
        "autocommit": True,
    }
    if parsed.port:
        kwargs["port"] = parsed.port
    if parsed.password:
        kwargs["password"] = parsed.password
    return kwargs


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    given = os.environ.get("EVENTOPS_TEST_DATABASE_URL")
    if given:
        yield given.replace("postgresql://", "postgresql+psycopg://", 1)
        return
    # Not under pytest's tmp dir: pytest prunes old ones while another session may still
    # run, and its 0700 parent is closed to the unprivileged user the server runs as.
    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="eventops-pg-")) / "data").start()
    try:
        yield server.url("postgres")
    finally:
        server.remove()
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session."""
    name = f"eventops_test_{uuid.uuid4().hex[:10]}"
    admin = _libpq_kwargs(postgres_server_url)
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    db.configure(url)
    try:
        yield url
    finally:
        db.get_engine().dispose()
        with psycopg.connect(**admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("EVENTOPS_TEST_BROKER_URL")
    if given:
        yield given
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("embedded-redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    """The session database, emptied before the test."""
    db.configure(database_url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with db.get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield database_url


@pytest.fixture
def clean_redis(broker_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    yield broker_url
    client.flushdb()


def make_config(**overrides: Any) -> EventopsConfig:
    """A valid config with one check, for tests to bend."""
    data: dict[str, Any] = {
        "platform_url": "http://127.0.0.1:9",
        "checks": [
            {"name": "api", "url": "{platform_url}/health", "interval": "1m", "timeout": "2s"}
        ],
        "channels": [{"name": "hook", "url": "json://127.0.0.1:9/hook"}],
        # The local servers tests probe live on loopback, which the SSRF guard refuses.
        "network": {"allow_internal": ["127.0.0.0/8"]},
        "policies": {
            "critical": {"steps": [{"after": "0s", "channels": ["hook"]}]},
            "warning": {"steps": [{"after": "15m", "channels": ["hook"]}]},
            "info": {"digest": True, "channels": ["hook"]},
        },
    }
    data.update(overrides)
    return parse_config(data)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


# Real processes for the fault and end-to-end tests (tests/faults/harness.py).
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
