"""Hostile input at the web app's doors (issue 15, item 7): bodies an outsider can send to
/login, beacons a token holder can send to /ingest/vitals, ids past the integer columns, and
a sweep that throws all of it at every route of a real dashboard process with Sentry on.
Each is a 4xx naming the problem; none is a 500, and nothing reaches Sentry."""

from __future__ import annotations

import itertools
import re
import socket
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.dashboard_server import Dashboard, running_dashboard
from tests.integration.test_sentry import EnvelopeReceiver
from web.app import create_app
from workers.settings import Settings

# One token for ingestion and /metrics, so the sweep's one Authorization header opens both.
TOKEN = "token-for-hostile-tests"

# One past the largest Postgres `integer` (the checks' and incidents' id columns), a 20-digit
# id, one past bigint's smallest, and the ids no row has.
BAD_IDS = ["2147483648", "99999999999999999999", "-9223372036854775809", "0", "-1"]
# Percent-encoded: a lone surrogate as UTF-8 would have it, invalid UTF-8, a NUL, traversal.
BAD_STRINGS = ["%ED%A0%80", "%FF%FE", "%00", "..", "a" * 5000]

# 10,000 deep, unclosed (the parser never gets that far), under /login's 16 KB body limit.
DEEP_ARRAY = b"[" * 10_000
DEEP_OBJECT = b'{"a":' * 2_000
LONE_SURROGATE_LOGIN = b'{"username": "\\ud800", "password": "\\udfff", "next": "/\\ud800"}'
LONE_SURROGATE_BEACON = (
    b'{"name": "LCP", "value": 1200, "id": "v1-\\ud800", "page": "/\\udc00", "device": "mobile"}'
)
HUGE_INT = b"1" * 5000
HUGE_INT_BEACON = b'{"name": "LCP", "value": ' + HUGE_INT + b', "id": "v1", "page": "/"}'
HOSTILE_BODIES = [
    DEEP_ARRAY,
    DEEP_OBJECT,
    LONE_SURROGATE_LOGIN,
    LONE_SURROGATE_BEACON,
    HUGE_INT,
    HUGE_INT_BEACON,
    b'{"username": ' + HUGE_INT + b', "password": 1e999}',
    b'{"username": {"a": [1]}, "password": null}',
    b"\xff\xfe\x00 not utf-8",
    b"NaN",
    b"username=%ED%A0%80&password=%FF&next=%00",
]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded"]


@pytest.fixture(scope="module")
def hostile_dashboard(
    database_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    """A dashboard with ingestion and a metrics token on, so the token holders' routes are
    reached, not refused at the door."""
    with running_dashboard(
        database_url,
        broker_url,
        tmp_path_factory.mktemp("hostile"),
        EVENTOPS_INGEST_TOKEN=TOKEN,
        EVENTOPS_METRICS_TOKEN=TOKEN,
    ) as server:
        yield server


@pytest.mark.parametrize(
    "body",
    [LONE_SURROGATE_LOGIN, DEEP_ARRAY, DEEP_OBJECT, b'{"username": ' + HUGE_INT + b"}"],
    ids=["lone-surrogate", "deep-array", "deep-object", "huge-int"],
)
def test_a_login_body_with_a_lone_surrogate_deep_nesting_or_a_huge_number_is_a_400(
    hostile_dashboard: Dashboard, body: bytes
) -> None:
    # An address of its own: these are failed logins as far as the limiter may count them.
    with hostile_dashboard.client(source="127.0.0.21") as client:
        response = client.post("/login", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("body: ")
    assert "eventops_session" not in response.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (HUGE_INT_BEACON, 400),
        (b"[" + HUGE_INT + b"]", 400),
        (DEEP_ARRAY, 400),
        (DEEP_OBJECT, 400),
        (LONE_SURROGATE_BEACON, 400),
    ],
    ids=["huge-int-value", "huge-int-item", "deep-array", "deep-object", "lone-surrogate"],
)
def test_a_vitals_beacon_with_a_huge_number_deep_nesting_or_a_lone_surrogate_is_a_400(
    hostile_dashboard: Dashboard, clean_db: str, body: bytes, status: int
) -> None:
    with hostile_dashboard.client() as client:
        response = client.post(
            "/ingest/vitals",
            content=body,
            headers={"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == status, response.text
    assert "body is not JSON" in str(response.json()["detail"])


@pytest.mark.parametrize(
    ("path", "bad_id"),
    list(
        itertools.product(
            ["/api/checks/{}", "/api/checks/{}/series", "/api/incidents/{}"],
            ["2147483648", "99999999999999999999", "-2147483649"],
        )
    ),
)
def test_an_id_beyond_the_integer_column_is_a_4xx_not_a_500(
    hostile_dashboard: Dashboard, clean_db: str, path: str, bad_id: str
) -> None:
    client, _ = hostile_dashboard.login()
    with closing(client):
        response = client.get(path.format(bad_id))
    assert response.status_code in (404, 422), response.text


def test_acknowledging_an_id_beyond_the_integer_column_is_a_4xx_and_changes_nothing(
    hostile_dashboard: Dashboard, clean_db: str
) -> None:
    client, token = hostile_dashboard.login()
    with closing(client):
        response = client.post(
            "/api/incidents/2147483648/acknowledge",
            headers={"X-CSRF-Token": token, "Origin": hostile_dashboard.url},
        )
    assert response.status_code in (404, 422), response.text


# -- the sweep ------------------------------------------------------------------------------


# Routes the schema leaves out: pages, the login form, report files, static files.
HIDDEN_ROUTES = [
    ("/login", {"GET", "POST"}, ["next"]),
    ("/", {"GET"}, []),
    ("/healthz", {"GET"}, []),
    ("/openapi.json", {"GET"}, []),
    ("/reports/{name}/{filename}", {"GET"}, []),
    ("/static/{path}", {"GET"}, []),
]


def _routes() -> list[tuple[str, set[str], list[str]]]:
    """(path, methods, query parameter names) of every route the served app has: the
    schema's (the dashboard API and the other duties' routers) and the hidden ones."""
    app = create_app(
        Settings(
            database_url=None,
            broker_url=None,
            var_dir=Path("/nonexistent-eventops-var"),
            dashboard_password=SecretStr("sweep"),
            dashboard_secret=SecretStr("sweep"),
        ),
        config=None,
    )
    found = list(HIDDEN_ROUTES)
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            queries = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            found.append((path, {method.upper()}, queries))
    assert {"/api/checks/{check_id}", "/ingest/vitals", "/metrics"} <= {p for p, _, _ in found}, (
        "the sweep must cover the dashboard's, ingestion's and metrics' routes"
    )
    return found


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def _sweep(server: Dashboard) -> list[str]:
    """Every route with hostile path values, query values and bodies; the 5xx answers."""
    client, token = server.login()
    headers = {
        "X-CSRF-Token": token,
        "Origin": server.url,
        "Authorization": f"Bearer {TOKEN}",
    }
    failures = []

    def send(method: str, url: str, **kwargs: Any) -> None:
        try:
            response = client.request(
                method, url, headers=headers | kwargs.pop("headers", {}), **kwargs
            )
        except httpx.TransportError as error:
            failures.append(f"{method} {url}: {error!r}")
            return
        if response.status_code >= 500:
            failures.append(f"{method} {url}: {response.status_code} {response.text[:200]}")

    with closing(client):
        for path, methods, queries in _routes():
            if path in ("/logout",):
                continue  # would end the sweep's own session; /login covers the form parser
            for method in sorted(methods - {"HEAD"}):
                urls = {_fill(path, value) for value in BAD_IDS + BAD_STRINGS}
                urls.add(_fill(path, "1"))
                for url in sorted(urls):
                    send(method, url)
                for name, value in itertools.product(queries, BAD_IDS + BAD_STRINGS):
                    send(method, f"{_fill(path, '1')}?{name}={value}")
                if method == "POST":
                    for body, content_type in itertools.product(HOSTILE_BODIES, CONTENT_TYPES):
                        send(
                            method,
                            _fill(path, "1"),
                            content=body,
                            headers={"Content-Type": content_type},
                        )
        # Last, as it ends the session: the logout form parser.
        for body, content_type in itertools.product(HOSTILE_BODIES, CONTENT_TYPES):
            send("POST", "/logout", content=body, headers={"Content-Type": content_type})
    return failures


@contextmanager
def dashboard_reporting_to_sentry(
    database_url: str, broker_url: str, var_dir: Path
) -> Iterator[tuple[Dashboard, list[dict[str, Any]]]]:
    """A dashboard with ingestion, a metrics token and Sentry pointed at a local receiver;
    the list holds the events Sentry sent once the block ends (the server has stopped, and
    Sentry flushed what it had on the way out)."""
    receiver = EnvelopeReceiver()
    receiver.thread.start()
    events: list[dict[str, Any]] = []
    try:
        with running_dashboard(
            database_url,
            broker_url,
            var_dir,
            EVENTOPS_INGEST_TOKEN=TOKEN,
            EVENTOPS_METRICS_TOKEN=TOKEN,
            EVENTOPS_SENTRY_DSN=receiver.dsn,
        ) as server:
            yield server, events
        events.extend(
            payload for envelope in receiver.envelopes for payload in envelope.payloads("event")
        )
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_hostile_input_at_every_route_is_never_a_5xx_and_never_reaches_sentry(
    database_url: str, broker_url: str, tmp_path: Path, clean_db: str
) -> None:
    with dashboard_reporting_to_sentry(database_url, broker_url, tmp_path / "var") as (
        server,
        events,
    ):
        failures = _sweep(server)
    assert failures == [], "\n".join(failures[:30])
    assert events == [], [event.get("exception", event.get("message")) for event in events][:5]


def hang_up_mid_body(server: Dashboard, target: str, content_type: str) -> None:
    """Send a POST's headers and the start of the 1,000-byte body they promise, then hang
    up, as a client that crashes or loses its network does."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"username": "ops"'
        )


def test_a_client_that_hangs_up_mid_body_is_neither_a_traceback_nor_a_sentry_event(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Anyone can start a login and go away; a token holder's beacon can be cut off.
    with dashboard_reporting_to_sentry(database_url, broker_url, tmp_path / "var") as (
        server,
        events,
    ):
        for content_type in ("application/json", "application/x-www-form-urlencoded"):
            hang_up_mid_body(server, "/login", content_type)
        hang_up_mid_body(server, f"/ingest/vitals?token={TOKEN}", "application/json")
        with server.client() as client:
            assert client.get("/healthz").status_code == 200
    assert events == [], [event.get("exception", event.get("message")) for event in events][:5]
    log = server.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
