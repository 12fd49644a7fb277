"""The backup commands an operator runs in an emergency, against real Postgres and pg_dump."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import make_url

from core.backups.tools import Conn
from workers import settings as settings_module
from workers.cli import main


@pytest.fixture
def platform_url(postgres_server_url: str) -> Iterator[str]:
    name = f"platform_{uuid.uuid4().hex[:8]}"
    admin = Conn.from_url(postgres_server_url)
    with admin.connect() as db:
        db.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    with Conn.from_url(url).connect() as db:
        db.execute("CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL)")
        db.execute(
            "INSERT INTO users (email)"
            " SELECT 'u' || g || '@example.test' FROM generate_series(1, 250) g"
        )
    yield url
    with admin.connect() as db:
        for database in (name, f"{name}_copy"):
            db.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def backup_env(
    clean_db: str, platform_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.setenv("EVENTOPS_PLATFORM_DATABASE_URL", platform_url)
    monkeypatch.setenv("EVENTOPS_BACKUP_KEY", "correct horse battery staple")
    monkeypatch.setenv("EVENTOPS_VAR_DIR", str(tmp_path))
    settings_module.get_settings.cache_clear()
    settings_module.get_config.cache_clear()
    yield make_url(platform_url).database or ""
    settings_module.get_settings.cache_clear()
    settings_module.get_config.cache_clear()


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_backup_verify_restore_test_and_restore_into_a_named_database(backup_env: str) -> None:
    source = backup_env
    taken = cli("backups", "run")
    assert taken.exit_code == 0, taken.output
    assert "state: succeeded" in taken.output
    [backup] = json.loads(cli("backups", "list", "--json").output)
    assert (backup["state"], backup["encrypted"]) == ("succeeded", True)
    assert "skipped" in cli("backups", "run").output  # this hour's backup exists

    verified = cli("backups", "verify", str(backup["id"]))
    assert verified.exit_code == 0 and "verify_state: verified" in verified.output
    tested = cli("backups", "restore-test")
    assert tested.exit_code == 0 and "state: passed" in tested.output, tested.output

    refused = cli("backups", "restore", str(backup["id"]), "--target-db", source)
    assert refused.exit_code == 1 and "is the source database" in refused.output

    copy = f"{source}_copy"
    restored = cli("backups", "restore", str(backup["id"]), "--target-db", copy)
    assert restored.exit_code == 0, restored.output
    settings = settings_module.get_settings()
    assert settings.platform_database_url is not None
    target = Conn.from_url(settings.platform_database_url.get_secret_value()).with_db(copy)
    with target.connect() as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (250,)

    again = cli("backups", "restore", str(backup["id"]), "--target-db", copy)
    assert again.exit_code == 1 and "exists" in again.output
    assert (
        cli("backups", "restore", str(backup["id"]), "--target-db", copy, "--replace").exit_code
        == 0
    )


def test_a_corrupt_backup_makes_verify_exit_1(backup_env: str) -> None:
    cli("backups", "run")
    [backup] = json.loads(cli("backups", "list", "--json").output)
    path = Path(backup["path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = cli("backups", "verify")
    assert result.exit_code == 1
    [after] = json.loads(cli("backups", "list", "--json").output)
    assert after["verify_state"] == "corrupt"


def test_backup_commands_say_clearly_when_no_platform_database_is_configured(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTOPS_PLATFORM_DATABASE_URL", raising=False)
    settings_module.get_settings.cache_clear()
    result = cli("backups", "run")
    settings_module.get_settings.cache_clear()
    assert result.exit_code == 1
    assert "EVENTOPS_PLATFORM_DATABASE_URL is not set" in result.output


def test_the_scheduled_task_skips_when_backups_are_not_configured(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.backups import dump

    monkeypatch.delenv("EVENTOPS_PLATFORM_DATABASE_URL", raising=False)
    settings_module.get_settings.cache_clear()
    try:
        assert dump.run("hourly") == {"skipped": "EVENTOPS_PLATFORM_DATABASE_URL is not set"}
    finally:
        settings_module.get_settings.cache_clear()
