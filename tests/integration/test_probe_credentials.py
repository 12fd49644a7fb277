"""Check URLs with credentials (`https://user:password@host/path`): sent as Basic auth, as
curl and blackbox_exporter send them, only to the check's own origin, and never shown.

Real servers on loopback (tests/hostile_servers.py) record what each request carried.
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
from collections.abc import Callable
from urllib.parse import quote

import httpx
import pytest

from core.netguard import AddressPolicy
from core.probing import ProbeResult, Reason, make_client
from tests.hostile_servers import (
    RawServer,
    assert_down,
    echo,
    garbage,
    read_request_head,
    request_path,
    respond,
    routes,
    run_probe,
    silent,
    target,
)

pytestmark = pytest.mark.timeout(30)

USER = "monitor"
# Characters a URL must percent-encode, so the test also proves they are decoded once.
PASSWORD = "s3cret p@ss:w/rd%"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def with_credentials(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@{rest}"


def authorization(head: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            return value.strip().decode()
    return None


def recording(
    heads: list[bytes], table: dict[str, tuple[str, bytes, str]]
) -> Callable[[socket.socket, threading.Event], None]:
    """`routes(table)`, keeping every request head in `heads`."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        head = read_request_head(conn, stop)
        heads.append(head)
        status, body, headers = table.get(request_path(head), ("404 Not Found", b"", ""))
        respond(conn, status, body, headers)

    return handler


def assert_nothing_shows(secret: str, result: ProbeResult, log_text: str) -> None:
    for shown in (str(result.to_json()), repr(result), log_text):
        assert secret not in shown
        assert quote(secret, safe="") not in shown


def test_credentials_in_the_url_are_sent_as_basic_auth_and_not_in_the_request_line(
    serve: Callable[..., RawServer],
) -> None:
    heads: list[bytes] = []

    def basic_auth_only(conn: socket.socket, stop: threading.Event) -> None:
        head = read_request_head(conn, stop)
        heads.append(head)
        if authorization(head) == BASIC:
            respond(conn, "200 OK", b"ok")
        else:
            respond(conn, "401 Unauthorized", b"", 'WWW-Authenticate: Basic realm="x"\r\n')

    server = serve(basic_auth_only)

    result = run_probe(target(with_credentials(server.url("/private"))))

    assert (result.status, result.http_status) == ("up", 200), result
    request_line, *header_lines = heads[0].decode().split("\r\n")
    assert request_line == "GET /private HTTP/1.1"
    host = [line.lower() for line in header_lines if line.lower().startswith("host:")]
    assert host == [f"host: 127.0.0.1:{server.port}"]


def test_credentials_follow_a_redirect_within_the_origin_but_never_to_another_host(
    serve: Callable[..., RawServer],
) -> None:
    # As curl without --location-trusted: the check's credentials are for its own origin.
    elsewhere_heads: list[bytes] = []
    elsewhere = serve(
        recording(elsewhere_heads, {"/landed": ("200 OK", b"ok", "")}), host="127.0.0.2"
    )
    origin_heads: list[bytes] = []
    origin = serve(
        recording(
            origin_heads,
            {
                "/start": ("302 Found", b"", "Location: /next\r\n"),
                "/next": ("302 Found", b"", f"Location: {elsewhere.url('/landed')}\r\n"),
            },
        )
    )

    result = run_probe(target(with_credentials(origin.url("/start"))))

    assert (result.status, result.http_status) == ("up", 200), result
    assert [authorization(head) for head in origin_heads] == [BASIC, BASIC]
    assert [authorization(head) for head in elsewhere_heads] == [None]


def test_credentials_a_redirect_names_in_its_location_are_not_sent(
    serve: Callable[..., RawServer],
) -> None:
    # Only the check's own credentials are ever sent; a Location with userinfo is followed
    # without it (and next to the check's Authorization, aiohttp would refuse the request).
    heads: list[bytes] = []
    server = serve(recording(heads, {"/landed": ("200 OK", b"ok", "")}))
    redirecting = serve(
        routes(
            {"/": ("302 Found", b"", f"Location: {with_credentials(server.url('/landed'))}\r\n")}
        )
    )

    result = run_probe(target(redirecting.url("/")))

    assert (result.status, result.http_status) == ("up", 200), result
    assert [authorization(head) for head in heads] == [None]


@pytest.mark.parametrize(
    "outcome", ["up", "bad_status", "timeout", "protocol_error", "refused", "blocked_address",
                "too_many_redirects"],
)  # fmt: skip
def test_credentials_never_show_in_an_outcome_or_a_log_line(
    serve: Callable[..., RawServer], caplog: pytest.LogCaptureFixture, outcome: str
) -> None:
    servers = {
        "up": lambda: serve(routes({"/": ("200 OK", b"ok", "")})),
        "bad_status": lambda: serve(routes({"/": ("401 Unauthorized", b"", "")})),
        "timeout": lambda: serve(silent),
        "protocol_error": lambda: serve(garbage()),
        "blocked_address": lambda: serve(routes({"/": ("200 OK", b"ok", "")})),
        "too_many_redirects": lambda: serve(routes({"/": ("302 Found", b"", "Location: /\r\n")})),
    }
    if outcome == "refused":
        with socket.socket() as placeholder:
            placeholder.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{placeholder.getsockname()[1]}/"
    else:
        url = servers[outcome]().url("/")
    # Loopback is internal: allowed here, except where the refusal is what is under test.
    allow = [] if outcome == "blocked_address" else ["127.0.0.0/8"]

    def client() -> httpx.AsyncClient:
        return make_client(policy=AddressPolicy.from_allow_list(allow))

    # httpx's logger too: a worker's logging setup, run by earlier tests in this process,
    # sets it to WARNING, and its request line is what must not show the password.
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="httpx"):
        result = run_probe(target(with_credentials(url), timeout_s=0.5), client)

    expected = {"up": "up", "bad_status": Reason.BAD_STATUS}.get(outcome, outcome)
    assert (result.reason or result.status) == expected, result
    assert_nothing_shows(PASSWORD, result, caplog.text)
    assert "HTTP Request" in caplog.text or outcome not in {"up", "bad_status"}


@pytest.mark.parametrize(
    "prefix", [b"", b"HTTP/1.1 200 OK\r\n"], ids=["as the status line", "as a header"]
)
def test_a_server_that_echoes_the_request_puts_neither_its_path_nor_query_in_the_outcome(
    serve: Callable[..., RawServer], prefix: bytes
) -> None:
    # The parser's error quoted the line it choked on: here the request line, with the check
    # URL's path and `?token=`, into the outcome's detail, the incident and its notifications.
    token = "tok3n-Zq7secret"
    server = serve(echo(prefix))

    result = run_probe(target(with_credentials(server.url(f"/private/{token}?token={token}"))))

    assert_down(result, Reason.PROTOCOL)
    assert result.detail, result
    assert token not in str(result.to_json())
    assert_nothing_shows(PASSWORD, result, "")


@pytest.mark.parametrize(
    ("userinfo", "sent"),
    [
        ("monitor:p%40ss", b"monitor:p@ss"),
        ("monitor:", b"monitor:"),
        ("monitor", b"monitor:"),
        ("%C3%BCser:p%C3%A4ss", "üser:päss".encode()),
        ("monitor:p%E4ss", b"monitor:p\xe4ss"),  # Latin-1, as an older server may expect
    ],
)
def test_credentials_are_sent_as_the_bytes_their_percent_encoding_names(
    serve: Callable[..., RawServer], userinfo: str, sent: bytes
) -> None:
    # As curl sends them: a byte that is not UTF-8 was sent as U+FFFD (three other bytes),
    # so a server that checks Latin-1 passwords refused the right one.
    heads: list[bytes] = []
    server = serve(recording(heads, {"/": ("200 OK", b"ok", "")}))

    result = run_probe(target(server.url("/").replace("://", f"://{userinfo}@", 1)))

    assert result.status == "up", result
    assert [authorization(head) for head in heads] == ["Basic " + base64.b64encode(sent).decode()]
