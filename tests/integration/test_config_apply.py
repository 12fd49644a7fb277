"""A malformed config is refused whole: nothing of it reaches the running system."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from sqlalchemy import select

from models.db import session_scope
from models.tables import Check


def migrate(config: Path, database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
    env.update(
        EVENTOPS_DATABASE_URL=database_url,
        EVENTOPS_CONFIG_FILE=str(config),
        EVENTOPS_VAR_DIR=str(tmp_path / "var"),
    )
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def checks_in_database() -> dict[str, tuple[str, float]]:
    with session_scope() as session:
        rows = session.execute(select(Check.name, Check.url, Check.interval_s, Check.enabled))
        return {name: (url, interval) for name, url, interval, enabled in rows if enabled}


def test_config_with_one_bad_check_changes_no_check_at_all(clean_db: str, tmp_path: Path) -> None:
    good = {
        "platform_url": "http://127.0.0.1:9",
        "checks": [
            {"name": "api", "url": "{platform_url}/health", "interval": "1m", "timeout": "2s"},
            {"name": "web", "url": "{platform_url}/", "interval": "1m", "timeout": "2s"},
        ],
    }
    config = tmp_path / "eventops.yaml"
    config.write_text(yaml.safe_dump(good))
    assert migrate(config, clean_db, tmp_path).returncode == 0
    before = checks_in_database()
    assert set(before) == {"api", "web"}

    # The first check changes validly, a new one is added, the last one is broken: applying
    # the good part would leave a config nobody wrote.
    bad = {
        **good,
        "checks": [
            {"name": "api", "url": "{platform_url}/v2", "interval": "5m", "timeout": "2s"},
            {"name": "new", "url": "{platform_url}/new", "interval": "1m", "timeout": "2s"},
            {"name": "web", "url": "{platform_url}/", "interval": "1m", "timeout": "2m"},
        ],
    }
    config.write_text(yaml.safe_dump(bad))
    refused = migrate(config, clean_db, tmp_path)

    assert refused.returncode == 2
    assert "checks[2].timeout: must be less than interval" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    assert checks_in_database() == before
