"""A real `eventops flower` process (issue 15, item 8): basic auth on every route, /metrics
included, and wrong passwords limited per client address; the password never in argv."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import ROOT, RunningFlower, eventops, free_port, running_flower

USER, PASSWORD = "admin", "flower-auth-pw-5521,with-a-comma"


def flower_env(database_url: str, broker_url: str, var: Path, password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTOPS_", "FLOWER_"))}
    env.update(
        EVENTOPS_DATABASE_URL=database_url,
        EVENTOPS_BROKER_URL=broker_url,
        EVENTOPS_VAR_DIR=str(var),
        EVENTOPS_CONFIG_FILE=str(ROOT / "config/eventops.yaml"),
        EVENTOPS_FLOWER_USER=USER,
        EVENTOPS_FLOWER_PASSWORD=password,
    )
    return env


@pytest.fixture(scope="module")
def flower(
    database_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningFlower]:
    var = tmp_path_factory.mktemp("flower")
    with running_flower(
        flower_env(database_url, broker_url, var, PASSWORD), var / "flower.log"
    ) as server:
        yield server


def client(flower: RunningFlower, source: str) -> httpx.Client:
    """A client connecting from `source`, a loopback address of the test's own, so one
    test's lock-out is not another's."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=flower.url, timeout=10, transport=transport)


# Pages, the API, Prometheus metrics, static files and paths Flower does not know.
GUARDED = [
    "/",
    "/workers",
    "/tasks",
    "/broker",
    "/api/tasks",
    "/api/workers",
    "/api/task/types",
    "/metrics",
    "/static/css/flower.css",
    "/no-such-page",
]


def test_metrics_and_every_other_route_need_the_password(flower: RunningFlower) -> None:
    with client(flower, "127.0.0.51") as anonymous:
        for path in GUARDED:
            refused = anonymous.get(path)
            assert refused.status_code == 401, (path, refused.text[:200])
            assert refused.headers["www-authenticate"] == 'Basic realm="flower"'
            assert "flower_" not in refused.text and "celery" not in refused.text.lower()
        # A POST is refused before Flower reads it.
        assert anonymous.post("/api/task/async-apply/probes.dispatch_due").status_code == 401
        # The health check tells nothing a 401 does not: open, for load balancers.
        health = anonymous.get("/healthcheck")
        assert health.status_code == 200 and health.text == "OK"
    with client(flower, "127.0.0.52") as operator:
        metrics = operator.get("/metrics", auth=(USER, PASSWORD))
        assert metrics.status_code == 200
        assert "flower_events_total" in metrics.text or "# HELP" in metrics.text
        assert operator.get("/api/tasks", auth=(USER, PASSWORD)).status_code == 200


def test_fifty_wrong_passwords_get_five_401s_then_429_with_retry_after(
    flower: RunningFlower,
) -> None:
    with client(flower, "127.0.0.53") as guesser:
        statuses = []
        for n in range(50):
            reply = guesser.get("/metrics", auth=(USER, f"guess-{n}"))
            statuses.append(reply.status_code)
            if reply.status_code == 429:
                assert 0 < int(reply.headers["retry-after"]) <= 60
        assert statuses == [401] * 5 + [429] * 45
        # Locked: the right password from that address waits out the window too.
        assert guesser.get("/metrics", auth=(USER, PASSWORD)).status_code == 429
    # Another address is not locked.
    with client(flower, "127.0.0.54") as operator:
        assert operator.get("/metrics", auth=(USER, PASSWORD)).status_code == 200


def test_malformed_credentials_count_as_wrong_ones(flower: RunningFlower) -> None:
    with client(flower, "127.0.0.55") as guesser:
        for header in ["Basic", "Basic !!!", "Bearer x", "Basic " + "QQ==" * 100, "Basic Og=="]:
            assert guesser.get("/", headers={"Authorization": header}).status_code == 401
        assert guesser.get("/", headers={"Authorization": "Basic x"}).status_code == 429


def test_a_refused_request_is_answered_before_its_body_is_read(flower: RunningFlower) -> None:
    # Tornado reads a body whole (up to 100 MB) before any handler runs: a refusal that
    # waited for it let anyone without the password make Flower hold 100 MB per request.
    port = int(flower.url.rsplit(":", 1)[1])
    with socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=("127.0.0.56", 0)
    ) as sock:
        sock.sendall(
            b"POST /api/task/async-apply/probes.dispatch_due HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        # Not a byte of the body sent: the answer must not wait for it.
        assert sock.recv(100).startswith(b"HTTP/1.1 401 ")


def test_the_password_is_not_on_flowers_command_line(flower: RunningFlower) -> None:
    cmdline = Path(f"/proc/{flower.process.pid}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline and b"basic_auth" not in cmdline


def test_a_password_flower_cannot_compare_stops_the_start_with_the_setting_named(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Flower checks credentials again behind the guard with hmac.compare_digest on str,
    # which raises TypeError on non-ASCII text: every page was a 500 for the operator.
    password = "pässwörd-3317"
    started = subprocess.run(
        eventops("flower", "--port", str(free_port())),
        env=flower_env(database_url, broker_url, tmp_path, password),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2, started.stderr[-2000:]
    assert "EVENTOPS_FLOWER_PASSWORD: must be ASCII" in started.stderr
    assert password not in started.stdout + started.stderr
    assert "Traceback" not in started.stderr
