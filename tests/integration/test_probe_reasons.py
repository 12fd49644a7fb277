"""Every probe failure reason, proven against real servers on 127.0.0.1.

No mocks of httpx or sockets: each test starts a small server from the zoo in
tests/hostile_servers.py (plain sockets in threads, TLS through the standard `ssl` module
with certificates made by the `openssl` command) that misbehaves in one specific way, and
checks the outcome `probe()` turns it into.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from core.probing import (
    ProbeResult,
    Reason,
    make_client,
    probe,
    probe_all,
)
from tests.hostile_servers import (
    Handler,
    RawServer,
    assert_down,
    dripping_body,
    endless_body,
    endless_redirect_body,
    garbage,
    read_request_head,
    request_path,
    reset_before_answering,
    respond,
    routes,
    run_probe,
    silent,
    target,
    timed_probe,
    truncated_body,
)

pytestmark = pytest.mark.timeout(30)

# --------------------------------------------------------------------------- status


def test_healthy_200_is_up_with_status_and_latency(serve: Callable[..., RawServer]) -> None:
    server = serve(routes({"/health": ("200 OK", b"ok", "")}))

    result = run_probe(target(server.url("/health")))

    assert result.status == "up"
    assert result.ok
    assert result.http_status == 200
    assert result.reason is None
    assert result.latency_ms is not None and 0 < result.latency_ms < 2000


def test_503_is_down_with_bad_status(serve: Callable[..., RawServer]) -> None:
    server = serve(routes({"/": ("503 Service Unavailable", b"busy", "")}))

    result = run_probe(target(server.url("/")))

    assert_down(result, Reason.BAD_STATUS)
    assert result.http_status == 503


def test_204_is_bad_status_when_only_200_is_expected(serve: Callable[..., RawServer]) -> None:
    server = serve(routes({"/": ("204 No Content", b"", "")}))

    result = run_probe(target(server.url("/"), expected_status=(200,)))

    assert_down(result, Reason.BAD_STATUS)
    assert result.http_status == 204


def test_non_utf8_body_with_200_is_up(serve: Callable[..., RawServer]) -> None:
    body = b"\xff\xfe\x00\x80 not utf-8 \xc3\x28"
    server = serve(routes({"/": ("200 OK", body, "Content-Type: text/plain; charset=utf-8\r\n")}))

    result = run_probe(target(server.url("/")))

    assert result.status == "up"
    assert result.http_status == 200


# --------------------------------------------------------------------------- connecting


def test_port_with_nothing_listening_is_refused() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    # The socket is closed: nothing listens on `port` now.

    result, elapsed = timed_probe(target(f"http://127.0.0.1:{port}/"))

    assert_down(result, Reason.REFUSED)
    assert elapsed < 1.0


@pytest.mark.timeout(10)
def test_host_under_dot_invalid_is_dns() -> None:
    # RFC 2606: .invalid never resolves, so only the local resolver is asked.
    result = run_probe(target("http://eventops-probe-test.invalid/", timeout_s=5.0))

    assert_down(result, Reason.DNS)


def test_ftp_url_is_invalid_url() -> None:
    result = run_probe(target("ftp://127.0.0.1/file.txt"))

    assert_down(result, Reason.INVALID_URL)
    assert result.http_status is None


# --------------------------------------------------------------------------- deadlines


def test_server_that_accepts_and_never_answers_times_out_within_the_deadline(
    serve: Callable[..., RawServer],
) -> None:
    server = serve(silent)

    result, elapsed = timed_probe(target(server.url("/"), timeout_s=1.0))

    assert_down(result, Reason.TIMEOUT)
    assert 0.9 < elapsed < 1.0 + 1.0


def test_server_dripping_a_byte_at_a_time_times_out_within_the_deadline(
    serve: Callable[..., RawServer],
) -> None:
    server = serve(dripping_body(0.2))

    result, elapsed = timed_probe(target(server.url("/"), timeout_s=1.0))

    assert_down(result, Reason.TIMEOUT)
    assert result.http_status == 200  # the headers had arrived; the body never finished
    assert 0.9 < elapsed < 1.0 + 1.0


def test_endless_body_is_body_too_large_quickly(serve: Callable[..., RawServer]) -> None:
    server = serve(endless_body)

    result, elapsed = timed_probe(target(server.url("/"), timeout_s=5.0, max_body_bytes=10_000))

    assert_down(result, Reason.BODY_TOO_LARGE)
    assert result.http_status == 200
    assert elapsed < 1.0


def test_slow_target_does_not_delay_the_others_and_results_keep_input_order(
    serve: Callable[..., RawServer],
) -> None:
    fast = serve(routes({f"/{i}": ("200 OK", b"ok", "") for i in range(20)}))
    blackhole = serve(silent)
    slow_index = 7
    targets = [
        target(
            blackhole.url("/") if i == slow_index else fast.url(f"/{i}"),
            timeout_s=1.0,
            check_id=100 + i,
        )
        for i in range(20)
    ]

    async def main() -> list[ProbeResult]:
        client = make_client()
        try:
            return await probe_all(client, targets, concurrency=50)
        finally:
            await client.aclose()

    started = time.perf_counter()
    results = asyncio.run(main())
    elapsed = time.perf_counter() - started

    assert elapsed < 1.5
    assert [r.check_id for r in results] == [t.check_id for t in targets]
    assert_down(results[slow_index], Reason.TIMEOUT)
    others = [r for i, r in enumerate(results) if i != slow_index]
    assert all(r.status == "up" and r.http_status == 200 for r in others), others


# --------------------------------------------------------------------------- redirects


def test_redirect_loop_is_too_many_redirects(serve: Callable[..., RawServer]) -> None:
    server = serve(
        routes(
            {
                "/a": ("302 Found", b"", "Location: /b\r\n"),
                "/b": ("302 Found", b"", "Location: /a\r\n"),
            }
        )
    )

    result, elapsed = timed_probe(target(server.url("/a")))

    assert_down(result, Reason.TOO_MANY_REDIRECTS)
    assert elapsed < 1.0


def test_short_redirect_chain_is_followed_to_the_final_status(
    serve: Callable[..., RawServer],
) -> None:
    server = serve(
        routes(
            {
                "/old": ("301 Moved Permanently", b"", "Location: /new\r\n"),
                "/new": ("200 OK", b"ok", ""),
            }
        )
    )

    result = run_probe(target(server.url("/old")))

    assert result.status == "up"
    assert result.http_status == 200


def test_a_cookie_set_in_a_redirect_chain_is_sent_on_its_next_hop(
    serve: Callable[..., RawServer],
) -> None:
    # A login or consent hop that sets a cookie and expects it back, as a browser (and
    # blackbox_exporter, with its jar per probe) would send it.
    def handler(conn: socket.socket, stop: threading.Event) -> None:
        head = read_request_head(conn, stop)
        if request_path(head) == "/start":
            respond(conn, "302 Found", b"", "Set-Cookie: consent=yes; Path=/\r\nLocation: /app\r\n")
        elif b"consent=yes" in head:
            respond(conn, "200 OK", b"ok")
        else:
            respond(conn, "403 Forbidden", b"no consent")

    server = serve(handler)

    result = run_probe(target(server.url("/start")))

    assert result.status == "up", result
    assert result.http_status == 200


def test_a_probe_is_never_sent_a_cookie_an_earlier_probe_was_given(
    serve: Callable[..., RawServer],
) -> None:
    # The worker's client lives for the process: were cookies kept there, a check would stop
    # seeing what a new visitor sees, and the jar would grow with every site that sets one.
    cookie_headers: list[bytes | None] = []

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        head = read_request_head(conn, stop)
        sent = [line for line in head.split(b"\r\n") if line.lower().startswith(b"cookie:")]
        cookie_headers.append(sent[0] if sent else None)
        respond(conn, "200 OK", b"ok", "Set-Cookie: session=abc; Path=/\r\n")

    server = serve(handler)

    async def two_probes() -> list[ProbeResult]:
        async with make_client() as client:
            return [await probe(client, target(server.url("/"))) for _ in range(2)]

    results = asyncio.run(two_probes())

    assert [r.status for r in results] == ["up", "up"]
    assert cookie_headers == [None, None]


def test_a_redirect_with_a_body_over_the_limit_is_body_too_large(
    serve: Callable[..., RawServer],
) -> None:
    # httpx reads a redirect's body whole before following it; a hostile one streaming
    # gigabytes must end as the probe's own limit says, not in the worker's memory.
    server = serve(endless_redirect_body)

    result, elapsed = timed_probe(target(server.url("/"), max_body_bytes=100_000))

    assert_down(result, Reason.BODY_TOO_LARGE)
    assert "redirect body over 100000 bytes" in (result.detail or "")
    assert elapsed < 1.0


def test_a_300_with_a_location_is_a_final_answer_held_to_the_limit_with_its_status(
    serve: Callable[..., RawServer],
) -> None:
    # httpx follows 301, 302, 303, 307 and 308 only; a 300 is what the probe got, and its
    # body meets the probe's own limit, status and all.
    server = serve(routes({"/": ("300 Multiple Choices", b"x" * 5000, "Location: /a\r\n")}))

    result = run_probe(target(server.url("/"), max_body_bytes=1000))

    assert_down(result, Reason.BODY_TOO_LARGE)
    assert result.http_status == 300


# --------------------------------------------------------------------------- broken peers


@pytest.mark.parametrize(
    "garbage_bytes",
    [
        b"NOT HTTP\r\n\r\n",
        # The error message quotes these bytes: they must not make it a TLS or refused outcome.
        b"SSL certificate refused\r\n\r\n",
    ],
    ids=["plain-garbage", "garbage-quoting-ssl-and-refused"],
)
def test_garbage_instead_of_http_is_protocol_error(
    serve: Callable[..., RawServer], garbage_bytes: bytes
) -> None:
    server = serve(garbage(garbage_bytes))

    result, elapsed = timed_probe(target(server.url("/")))

    assert result.status == "down"
    assert result.reason in {Reason.PROTOCOL, Reason.CONNECTION}, result
    # httpx raises RemoteProtocolError ("illegal status line"): it is named as such.
    assert result.reason == Reason.PROTOCOL, result
    assert elapsed < 1.0


def test_body_cut_short_of_its_content_length_is_protocol_error(
    serve: Callable[..., RawServer],
) -> None:
    server = serve(truncated_body)

    result = run_probe(target(server.url("/")))

    assert_down(result, Reason.PROTOCOL)
    assert result.http_status == 200


def test_connection_reset_by_the_server_is_connection_error_not_an_exception(
    serve: Callable[..., RawServer],
) -> None:
    server = serve(reset_before_answering)

    result, elapsed = timed_probe(target(server.url("/")))

    assert_down(result, Reason.CONNECTION)
    assert elapsed < 1.0
    # One connection: the failure is reported, not retried (aiohttp would resend once).
    assert len(server.threads) == 1


# --------------------------------------------------------------------------- the transport


def keepalive_routes(
    body: bytes = b"ok", headers: str = "", heads: list[bytes] | None = None
) -> Handler:
    """Answers every request on a connection until the client hangs up (HTTP/1.1 keep-alive);
    keeps each request head in `heads` when given."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        while True:
            head = read_request_head(conn, stop)
            if heads is not None:
                heads.append(head)
            close = b"connection: close" in head.lower()
            conn.sendall(
                f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body
            )
            if close:
                return

    return handler


def probe_sequentially(client: httpx.AsyncClient, url: str, count: int) -> list[ProbeResult]:
    async def main() -> list[ProbeResult]:
        try:
            return [await probe(client, target(url)) for _ in range(count)]
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_keepalive_client_reuses_one_connection(serve: Callable[..., RawServer]) -> None:
    server = serve(keepalive_routes())

    results = probe_sequentially(make_client(), server.url("/"), 5)

    assert all(r.status == "up" for r in results), results
    assert len(server.threads) == 1


def test_client_without_keepalive_opens_a_connection_per_probe_and_says_close(
    serve: Callable[..., RawServer],
) -> None:
    heads: list[bytes] = []
    server = serve(keepalive_routes(heads=heads))

    results = probe_sequentially(make_client(keepalive=False), server.url("/"), 5)

    assert all(r.status == "up" for r in results), results
    assert len(server.threads) == 5
    assert all(b"connection: close" in head.lower() for head in heads), heads


def test_closing_the_client_closes_its_idle_connections(serve: Callable[..., RawServer]) -> None:
    hung_up = threading.Event()

    def serve_until_hang_up(conn: socket.socket, stop: threading.Event) -> None:
        try:
            keepalive_routes()(conn, stop)
        except ConnectionAbortedError:  # read_request_head saw the client close
            hung_up.set()

    server = serve(serve_until_hang_up)

    results = probe_sequentially(make_client(), server.url("/"), 1)

    assert results[0].status == "up"
    assert hung_up.wait(2.0), "the idle keep-alive connection stayed open after aclose()"


def test_client_built_outside_a_loop_works_in_each_loop_that_uses_it(
    serve: Callable[..., RawServer], caplog: pytest.LogCaptureFixture
) -> None:
    # workers/runtime.py builds the client before its loop runs, and run() makes a new
    # loop if the old one was closed: the transport's aiohttp session follows the loop.
    server = serve(keepalive_routes())
    client = make_client()

    first = asyncio.run(probe(client, target(server.url("/"))))
    second = asyncio.run(probe(client, target(server.url("/"))))
    asyncio.run(client.aclose())

    assert (first.status, second.status) == ("up", "up"), (first, second)
    # The first loop's session was let go cleanly, not left for aiohttp to complain about.
    assert "Unclosed" not in caplog.text


def test_many_concurrent_probes_are_not_held_back_by_a_connection_limit(
    serve: Callable[..., RawServer],
) -> None:
    # The server answers nobody until all of them are connected and waiting: with any cap
    # on connections below `count` the probes would time out instead.
    count = 150
    all_arrived = threading.Event()
    waiting = [0]
    lock = threading.Lock()

    def barrier(conn: socket.socket, stop: threading.Event) -> None:
        read_request_head(conn, stop)
        with lock:
            waiting[0] += 1
            if waiting[0] == count:
                all_arrived.set()
        while not all_arrived.wait(0.05):
            if stop.is_set():
                return
        respond(conn, "200 OK", b"ok")

    server = serve(barrier)
    targets = [target(server.url("/"), timeout_s=10.0, check_id=i) for i in range(count)]

    async def main() -> list[ProbeResult]:
        client = make_client()
        try:
            return await probe_all(client, targets, concurrency=count)
        finally:
            await client.aclose()

    results = asyncio.run(main())

    assert all(r.status == "up" for r in results), [r for r in results if not r.ok][:3]
    assert len(server.threads) == count


def test_compressed_body_counts_as_sent_against_max_body_bytes(
    serve: Callable[..., RawServer],
) -> None:
    # 1 MB of zeros gzipped is about 1 KB: the limit counts the bytes on the wire, as
    # httpx's aiter_raw() gives them (the transport does not decompress).
    small_on_the_wire = gzip.compress(b"\0" * 1_000_000)
    assert len(small_on_the_wire) < 5_000
    server = serve(keepalive_routes(small_on_the_wire, "Content-Encoding: gzip\r\n"))

    result = run_probe(target(server.url("/"), max_body_bytes=10_000))

    assert result.status == "up", result


def test_compressed_body_over_the_limit_on_the_wire_is_body_too_large(
    serve: Callable[..., RawServer],
) -> None:
    large_on_the_wire = gzip.compress(os.urandom(50_000))  # random bytes do not compress
    server = serve(keepalive_routes(large_on_the_wire, "Content-Encoding: gzip\r\n"))

    result = run_probe(target(server.url("/"), max_body_bytes=10_000))

    assert_down(result, Reason.BODY_TOO_LARGE)


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Certs:
    ca: Path  # the test CA that signed the leaves below
    valid: tuple[Path, Path]  # (cert, key) for 127.0.0.1, signed by the CA
    expired: tuple[Path, Path]  # for 127.0.0.1, signed by the CA, expired in 2001
    wrong_host: tuple[Path, Path]  # for example.test only, signed by the CA
    self_signed: tuple[Path, Path]  # for 127.0.0.1, signed by itself


CA_CONFIG = """\
[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any_name
copy_extensions = copy
unique_subject = no
[any_name]
commonName = supplied
"""

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    work = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    def self_signed(name: str, subject: str, *extra: str) -> tuple[Path, Path]:
        files = ["-keyout", f"{name}.key", "-out", f"{name}.pem"]
        openssl("req", "-x509", *EC_KEY, *files, "-days", "2", "-subj", subject, *extra)
        return work / f"{name}.pem", work / f"{name}.key"

    def signed(name: str, cn: str, san: str, *dates: str) -> tuple[Path, Path]:
        request = ["-subj", f"/CN={cn}", "-addext", f"subjectAltName={san}"]
        openssl("req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", *request)
        issuer = ["-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key"]
        openssl("ca", "-batch", *issuer, "-in", f"{name}.csr", "-out", f"{name}.pem", *dates)
        return work / f"{name}.pem", work / f"{name}.key"

    (work / "ca.cnf").write_text(CA_CONFIG)
    (work / "index.txt").write_text("")
    (work / "serial").write_text("01\n")
    self_signed("ca", "/CN=eventops test CA")
    in_2000 = ["-startdate", "20000101000000Z", "-enddate", "20010101000000Z"]
    return Certs(
        ca=work / "ca.pem",
        valid=signed("valid", "127.0.0.1", "IP:127.0.0.1", "-days", "2"),
        expired=signed("expired", "127.0.0.1", "IP:127.0.0.1", *in_2000),
        wrong_host=signed("wrong", "example.test", "DNS:example.test", "-days", "2"),
        self_signed=self_signed("self", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
    )


def server_tls(cert_and_key: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert_and_key)
    return context


def client_trusting(ca: Path) -> Callable[[], httpx.AsyncClient]:
    """make_client() (the production transport) trusting only the test CA, so that a failure
    is about the one thing under test (expiry, host name) and not about an unknown issuer."""

    def factory() -> httpx.AsyncClient:
        return make_client(ssl_context=ssl.create_default_context(cafile=str(ca)))

    return factory


OK_ROUTES = {"/": ("200 OK", b"ok", "")}


def test_valid_certificate_from_a_trusted_ca_is_up(
    serve: Callable[..., RawServer], certs: Certs
) -> None:
    # The control for the TLS tests below: this server and client do work together.
    server = serve(routes(OK_ROUTES), tls=server_tls(certs.valid))

    result = run_probe(target(server.url("/", "https")), client_trusting(certs.ca))

    assert result.status == "up", result
    assert result.http_status == 200


def test_self_signed_certificate_is_tls(serve: Callable[..., RawServer], certs: Certs) -> None:
    server = serve(routes(OK_ROUTES), tls=server_tls(certs.self_signed))

    result, elapsed = timed_probe(target(server.url("/", "https")))

    assert_down(result, Reason.TLS)
    assert "self-signed" in (result.detail or "") or "self signed" in (result.detail or "")
    assert elapsed < 1.0


def test_expired_certificate_is_tls(serve: Callable[..., RawServer], certs: Certs) -> None:
    server = serve(routes(OK_ROUTES), tls=server_tls(certs.expired))

    result = run_probe(target(server.url("/", "https")), client_trusting(certs.ca))

    assert_down(result, Reason.TLS)
    assert "expired" in (result.detail or ""), result


def test_certificate_for_another_host_name_is_tls(
    serve: Callable[..., RawServer], certs: Certs
) -> None:
    server = serve(routes(OK_ROUTES), tls=server_tls(certs.wrong_host))

    result = run_probe(target(server.url("/", "https")), client_trusting(certs.ca))

    assert_down(result, Reason.TLS)
    assert "mismatch" in (result.detail or "").lower(), result


def test_certificate_for_another_host_name_is_tls_with_the_default_client(
    serve: Callable[..., RawServer], certs: Certs
) -> None:
    server = serve(routes(OK_ROUTES), tls=server_tls(certs.wrong_host))

    result = run_probe(target(server.url("/", "https")))

    assert_down(result, Reason.TLS)
