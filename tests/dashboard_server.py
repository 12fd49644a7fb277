"""A real `eventops dashboard` process on a free port, for the API and browser tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
USER = "ops"
PASSWORD = "correct horse battery staple"

# The smallest valid config: the dashboard reads the checks from Postgres, not from here.
CONFIG_YAML = """\
platform_url: http://127.0.0.1:9
checks:
  - {name: api, url: "{platform_url}/health", interval: 1m, timeout: 2s}
channels:
  - {name: hook, url: "json://127.0.0.1:9/hook"}
policies:
  critical: {steps: [{after: 0s, channels: [hook]}]}
  warning: {steps: [{after: 15m, channels: [hook]}]}
  info: {digest: true, channels: [hook]}
"""


@dataclass
class Dashboard:
    url: str
    user: str
    password: str
    process: subprocess.Popen[bytes]
    log: Path
    var_dir: Path

    def client(self, source: str | None = None) -> httpx.Client:
        """A client; `source` (e.g. 127.0.0.2) is the local address it connects from, so a
        test that trips the per-address login limiter does so under an address of its own."""
        transport = httpx.HTTPTransport(local_address=source) if source else None
        return httpx.Client(
            base_url=self.url, timeout=30, follow_redirects=False, transport=transport
        )

    def login(self, source: str | None = None) -> tuple[httpx.Client, str]:
        """A logged-in client and the page's CSRF token."""
        client = self.client(source)
        response = client.post(
            "/login", data={"username": self.user, "password": self.password, "next": "/"}
        )
        assert response.status_code == 303, response.text
        page = client.get("/")
        assert page.status_code == 200, page.text
        return client, csrf_token(page.text)


def csrf_token(page: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_dashboard(
    database_url: str, broker_url: str, var_dir: Path, **extra_env: str
) -> Iterator[Dashboard]:
    var_dir.mkdir(parents=True, exist_ok=True)
    config_file = var_dir / "eventops.yaml"
    config_file.write_text(CONFIG_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
    env.update(
        EVENTOPS_DATABASE_URL=database_url,
        EVENTOPS_BROKER_URL=broker_url,
        EVENTOPS_VAR_DIR=str(var_dir),
        EVENTOPS_CONFIG_FILE=str(config_file),
        EVENTOPS_DASHBOARD_USER=USER,
        EVENTOPS_DASHBOARD_PASSWORD=PASSWORD,
        **extra_env,
    )
    port = free_port()
    log = var_dir / "dashboard.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "dashboard", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the dashboard exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield Dashboard(url, USER, PASSWORD, process, log, var_dir)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
