"""Real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright's Python package.

No browser download ever: Playwright launches the system Chromium. Without it the browser
tests skip with the reason, except in CI (CI=true), where a missing browser fails them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
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
def new_browser_context(chromium_path: str) -> Iterator[Callable[..., Any]]:
    """A factory: `new_browser_context(http_credentials={...})` starts a fresh Chromium (own
    temporary user-data dir) and returns its Playwright BrowserContext; all are closed after
    the test. Keyword arguments are Playwright's context options."""
    from playwright.sync_api import sync_playwright

    profiles: list[str] = []
    contexts: list[Any] = []
    with sync_playwright() as p:

        def launch(**options: Any) -> Any:
            profile = tempfile.mkdtemp(prefix="eventops-chromium-")
            profiles.append(profile)
            options.setdefault("viewport", {"width": 1400, "height": 1000})
            # Playwright takes the user-data dir as a parameter of a persistent context (it
            # refuses --user-data-dir in args); a new temporary one each time keeps it fresh.
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=chromium_path,
                args=CHROMIUM_ARGS,
                headless=True,
                **options,
            )
            contexts.append(context)
            return context

        try:
            yield launch
        finally:
            for context in contexts:
                context.close()
            for profile in profiles:
                shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser_context(new_browser_context: Callable[..., Any]) -> Any:
    """One fresh Chromium context with default options."""
    return new_browser_context()
