"""Real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright's Python package.

No browser download ever: Playwright launches the system Chromium. Without it the browser
tests skip with the reason, except in CI (CI=true), where a missing browser fails them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not CHROMIUM.exists():
        reason = (
            f"{CHROMIUM} is missing: install Debian's chromium package "
            "(apt-get install chromium); Playwright never downloads a browser here"
        )
        if _in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return str(CHROMIUM)


@pytest.fixture
def browser_context(chromium_path: str) -> Iterator[Any]:
    """A fresh Chromium with its own user-data dir; yields a Playwright BrowserContext."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="eventops-chromium-")
    try:
        with sync_playwright() as p:
            # Playwright takes the user-data dir as a parameter of a persistent context (it
            # refuses --user-data-dir in args); a new temporary one per test keeps it fresh.
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=chromium_path,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
