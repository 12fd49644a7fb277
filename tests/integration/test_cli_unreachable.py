"""A database or broker the CLI cannot reach is one clear line and exit 1, never a
traceback, and the line never carries the password from the URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workers.embedded import free_port


def eventops(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    closed = free_port()  # nothing listens there
    env = {
        **os.environ,
        "EVENTOPS_DATABASE_URL": f"postgresql+psycopg://ops:hunter2@127.0.0.1:{closed}/eventops",
        "EVENTOPS_BROKER_URL": f"redis://127.0.0.1:{closed}/0",
        "EVENTOPS_VAR_DIR": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [("checks", "list"), ("incidents", "list"), ("maintenance", "forget-worker", "w1@host")],
)
def test_an_unreachable_database_is_one_line_and_exit_1(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = eventops(tmp_path, *args)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "eventops: cannot reach the database: connection failed" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
