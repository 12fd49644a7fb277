"""A zoo of misbehaving HTTP servers on loopback, for the probe tests: raw sockets, one way of
misbehaving each.

`RawServer` runs a handler per connection in a thread; the handlers below each break one
promise a well-behaved server keeps (an answer, a bounded body, honest compression, ...).
`ZOO` lists every hostile kind with the outcome a probe must give it, for tests that take
them all at once (tests/integration/test_hostile_endpoints.py). The `serve` fixture
(tests/integration/conftest.py) starts servers for one test and joins their threads after;
`target` and `run_probe` probe them with the production client.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import importlib.util
import itertools
import multiprocessing
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection

import httpx

from core.probing import ProbeResult, ProbeTarget, Reason, make_client, probe

Handler = Callable[[socket.socket, threading.Event], None]

ANY_2XX = tuple(range(200, 300))


class RawServer:
    """A TCP server on `host`: one thread accepts, one thread per connection runs `handler`.

    Handlers get the connection (with a short socket timeout, so they can poll) and the
    stop event; `close()` sets the event, and every thread must then end promptly.
    """

    def __init__(
        self, handler: Handler, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.host = host
        self.stop = threading.Event()
        self.listener = socket.create_server((host, 0), backlog=128)
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept_loop, daemon=True)
        self.accepter.start()

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(0.1)
            if self.tls is not None:
                conn.settimeout(2.0)
                conn = self.tls.wrap_socket(conn, server_side=True)
                conn.settimeout(0.1)
            self.handler(conn, self.stop)
        except OSError:  # includes ssl.SSLError: the client hung up or refused our cert
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.accepter.join(timeout=2)
        self.listener.close()
        for worker in self.threads:
            worker.join(timeout=2)
        alive = [t for t in [self.accepter, *self.threads] if t.is_alive()]
        assert not alive, f"server threads still running at teardown: {alive}"


class ServerProcess:
    """A RawServer in a child process of its own, for tests that time many probes at once:
    its threads then never take the test process's GIL from the probes' event loop (a real
    target never shares a worker's), so a late probe is the probe's own doing.

    The child is forked, so `handler` may be any callable (nothing is pickled)."""

    def __init__(
        self, handler: Handler, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        context = multiprocessing.get_context("fork")
        self._control, child_end = context.Pipe()
        self.process = context.Process(
            target=_serve_in_child, args=(handler, tls, host, child_end), daemon=True
        )
        self.process.start()
        if not self._control.poll(10):
            self.process.kill()
            raise RuntimeError("the server process did not start")
        self.host = host
        self.port: int = self._control.recv()

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self._control.send("stop")
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
            raise AssertionError("the server process did not stop")


def _serve_in_child(
    handler: Handler, tls: ssl.SSLContext | None, host: str, control: Connection
) -> None:
    server = RawServer(handler, tls, host)
    control.send(server.port)
    control.recv()  # "stop", or EOFError when the test process is gone
    server.close()


# --------------------------------------------------------------------------- well-behaved


def read_request_head(conn: socket.socket, stop: threading.Event) -> bytes:
    """Read up to the blank line that ends the request head (probes send no body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if stop.is_set():
            raise ConnectionAbortedError("server stopping")
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            raise ConnectionAbortedError("client closed before finishing its request")
        data += chunk
    return data


def request_path(head: bytes) -> str:
    return head.split(b"\r\n", 1)[0].split(b" ")[1].decode()


def respond(conn: socket.socket, status: str, body: bytes = b"", headers: str = "") -> None:
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n"
    conn.sendall(head.encode() + body)


def routes(table: dict[str, tuple[str, bytes, str]]) -> Handler:
    """A well-behaved server: path -> (status line, body, extra header lines)."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        path = request_path(read_request_head(conn, stop))
        status, body, headers = table.get(path, ("404 Not Found", b"", ""))
        respond(conn, status, body, headers)

    return handler


def healthy_after(delay_s: float, body: bytes = b"ok") -> Handler:
    """A healthy service that answers 200 after `delay_s` (in flight while others misbehave)."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        read_request_head(conn, stop)
        if not stop.wait(delay_s):
            respond(conn, "200 OK", body)

    return handler


def send_forever(conn: socket.socket, stop: threading.Event, data: bytes) -> None:
    """Send `data` again and again until stopped or the client hangs up."""
    while not stop.is_set():
        try:
            conn.sendall(data)
        except TimeoutError:
            continue  # the client is not reading; poll `stop` again
        except OSError:
            return


# --------------------------------------------------------------------------- the zoo


def silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accepts, then never says a word (behind an https URL: a TLS handshake that stalls)."""
    stop.wait()


def slow_headers(conn: socket.socket, stop: threading.Event) -> None:
    """The status line, then a header line every 0.2 s, never the blank line that ends them:
    each read arrives inside any per-read timeout."""
    read_request_head(conn, stop)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    count = 0
    while not stop.wait(0.2) and count < 100:
        conn.sendall(b"X-Slow-%d: y\r\n" % count)
        count += 1


def header_flood(conn: socket.socket, stop: threading.Event) -> None:
    """Headers without end, as fast as the client takes them."""
    read_request_head(conn, stop)
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    send_forever(conn, stop, b"".join(b"X-Flood-%d: %s\r\n" % (i, b"f" * 64) for i in range(256)))


def endless_header_line(conn: socket.socket, stop: threading.Event) -> None:
    """One header line that never ends."""
    read_request_head(conn, stop)
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Long: ")
    send_forever(conn, stop, b"l" * 16_384)


def informational_flood(conn: socket.socket, stop: threading.Event) -> None:
    """`100 Continue` after `100 Continue`: a client skips each one and waits for the next
    (aiohttp, with no limit)."""
    read_request_head(conn, stop)
    send_forever(conn, stop, b"HTTP/1.1 100 Continue\r\n\r\n" * 64)


def endless_body(conn: socket.socket, stop: threading.Event) -> None:
    """A 200 whose body never ends (no length, no chunking: it ends when the server closes)."""
    read_request_head(conn, stop)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
    send_forever(conn, stop, b"z" * 16_384)


def endless_redirect_body(conn: socket.socket, stop: threading.Event) -> None:
    """A 302 whose chunked body never ends: a client reads a redirect's body before following."""
    read_request_head(conn, stop)
    conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /next\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65_536
    send_forever(conn, stop, b"%x\r\n%s\r\n" % (len(chunk), chunk))


def dripping_body(interval_s: float = 1.0) -> Handler:
    """A 200 whose body comes a byte every `interval_s`: each read arrives inside any per-read
    timeout, so only an overall deadline ends the exchange."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        read_request_head(conn, stop)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        conn.sendall(b"x")
        while not stop.wait(interval_s):
            conn.sendall(b"x")

    return handler


def tiny_chunks(chunk: bytes) -> Handler:
    """A chunked 200 whose body never ends, in tiny chunks (`chunk` is one, framing and all):
    the parsing costs per chunk, not per byte."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        read_request_head(conn, stop)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        send_forever(conn, stop, chunk * (1_048_576 // len(chunk)))

    return handler


def reset_mid_body(conn: socket.socket, stop: threading.Event) -> None:
    """Half of the promised body, then a TCP reset."""
    read_request_head(conn, stop)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"r" * 50_000)
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_before_answering(conn: socket.socket, stop: threading.Event) -> None:
    """Reads the request, then resets the connection."""
    read_request_head(conn, stop)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def garbage(data: bytes = b"NOT HTTP\r\n\r\n") -> Handler:
    """Something that is not an HTTP status line, then the end of the stream."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        read_request_head(conn, stop)
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

    return handler


def echo(prefix: bytes = b"") -> Handler:
    """Sends the request back (after `prefix`) as its answer: a port serving an echo service,
    or a debugging endpoint gone wrong. The request line holds the check URL's path and query."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(prefix + read_request_head(conn, stop))
        conn.shutdown(socket.SHUT_WR)

    return handler


def truncated_body(conn: socket.socket, stop: threading.Event) -> None:
    """A body cut short of its Content-Length, then a clean close."""
    read_request_head(conn, stop)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    conn.shutdown(socket.SHUT_WR)


REDIRECT_LOOP = {
    "/": ("302 Found", b"", "Location: /b\r\n"),
    "/b": ("302 Found", b"", "Location: /\r\n"),
}


def redirect_loop() -> Handler:
    return routes(REDIRECT_LOOP)


def new_long_redirects() -> Handler:
    """Redirects, each to a new URL of 7 KB: what a worker remembers per URL adds up."""
    count = itertools.count()

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        read_request_head(conn, stop)
        respond(conn, "302 Found", b"", f"Location: /{next(count)}-{'u' * 7000}\r\n")

    return handler


def cookie_flood_redirects(conn: socket.socket, stop: threading.Event) -> None:
    """Four 302s in a row, each with as many and as costly Set-Cookie headers as an HTTP
    parser lets through (120 of 8 KB, each 400 `expires` attributes to parse), then a 200."""
    path = request_path(read_request_head(conn, stop))
    hops = ["/", "/1", "/2", "/3"]
    if path not in hops:
        respond(conn, "200 OK", b"ok")
        return
    cookie = (b"Set-Cookie: c=v" + b";expires=01-Jan-2001" * 400)[:8000] + b"\r\n"
    next_hop = f"/{hops.index(path) + 1}".encode()
    conn.sendall(
        b"HTTP/1.1 302 Found\r\nLocation: " + next_hop + b"\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n" + cookie * 120 + b"\r\n"
    )


def cookie_flood_answer(conn: socket.socket, stop: threading.Event) -> None:
    """A 200 with the same flood of Set-Cookie headers: a final answer's cookies are never
    sent again, so a probe has no reason to parse them at all."""
    read_request_head(conn, stop)
    cookie = (b"Set-Cookie: c=v" + b";expires=01-Jan-2001" * 400)[:8000] + b"\r\n"
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n" + cookie * 120 + b"\r\nok"
    )


# --------------------------------------------------------------------------- compression bombs


@functools.cache
def bomb(encoding: str, inflated_bytes: int) -> bytes:
    """`inflated_bytes` of zeros compressed as `Content-Encoding: <encoding>` says (`gzip`,
    `deflate`, `br`, or a list such as `gzip, gzip`, applied in order), built in pieces so
    the inflated size never sits in the test's own memory. Kept once made (0.4 s per 128 MB)."""
    data = _zeros_compressed(encoding.split(",")[0].strip(), inflated_bytes)
    for layer in encoding.split(",")[1:]:
        data = _compressed(layer.strip(), data)
    return data


def _zeros_compressed(coding: str, size: int) -> bytes:
    piece = b"\0" * 1_048_576
    if coding == "br":
        import brotli  # type: ignore[import-not-found]

        compressor = brotli.Compressor()
        parts = [compressor.process(piece) for _ in range(size // len(piece))]
        return b"".join([*parts, compressor.finish()])
    if coding == "gzip":
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    elif coding == "deflate":
        compressor = zlib.compressobj(9)  # a zlib stream, what HTTP's "deflate" means
    else:
        raise ValueError(coding)
    parts = [compressor.compress(piece) for _ in range(size // len(piece))]
    return b"".join([*parts, compressor.flush()])


def _compressed(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.compress(data, 9)
    if coding == "deflate":
        return zlib.compress(data, 9)
    raise ValueError(coding)


def compressed_answer(
    status: str, encoding: str, body: bytes, location: str | None = "/landed"
) -> Handler:
    """Answers `status` with `body` sent as `Content-Encoding: <encoding>`; with a Location,
    that path answers a plain 200, so a followed redirect lands somewhere healthy."""

    def handler(conn: socket.socket, stop: threading.Event) -> None:
        path = request_path(read_request_head(conn, stop))
        if location is not None and path == location:
            respond(conn, "200 OK", b"landed")
            return
        headers = f"Content-Encoding: {encoding}\r\n"
        if location is not None:
            headers += f"Location: {location}\r\n"
        respond(conn, status, body, headers)

    return handler


# --------------------------------------------------------------------------- probing


def target(
    url: str,
    *,
    timeout_s: float = 2.0,
    expected_status: tuple[int, ...] = ANY_2XX,
    max_body_bytes: int = 1_000_000,
    check_id: int = 1,
) -> ProbeTarget:
    return ProbeTarget(
        check_id=check_id,
        slot=datetime.now(UTC),
        url=url,
        method="GET",
        timeout_s=timeout_s,
        expected_status=expected_status,
        max_body_bytes=max_body_bytes,
    )


def run_probe(
    probe_target: ProbeTarget, client_factory: Callable[[], httpx.AsyncClient] = make_client
) -> ProbeResult:
    async def main() -> ProbeResult:
        client = client_factory()
        try:
            return await probe(client, probe_target)
        finally:
            await client.aclose()

    return asyncio.run(main())


def timed_probe(
    probe_target: ProbeTarget, client_factory: Callable[[], httpx.AsyncClient] = make_client
) -> tuple[ProbeResult, float]:
    started = time.perf_counter()
    result = run_probe(probe_target, client_factory)
    return result, time.perf_counter() - started


def assert_down(result: ProbeResult, reason: str) -> None:
    assert result.status == "down", result
    assert result.reason == reason, result
    assert not result.ok


# --------------------------------------------------------------------------- the catalogue

INFLATED = 128 * 1_048_576
"""What each bomb inflates to: enough that decoding one on the event loop takes a noticeable
part of a second and a hundred megabytes or more."""


@dataclass(frozen=True)
class Hostile:
    """One kind of misbehaving server and the outcome a probe must give it."""

    name: str
    handler: Callable[[], Handler]  # called once per test, so a bomb is built only when used
    reason: str | None  # None: the probe is `up` (what was hostile is harmless to it)
    scheme: str = "http"
    max_body_bytes: int = 1_048_576


def _zoo() -> list[Hostile]:
    up = None
    brotli = (
        [
            Hostile(
                "brotli bomb on a 302",
                lambda: compressed_answer("302 Found", "br", bomb("br", INFLATED)),
                up,
            )
        ]
        if importlib.util.find_spec("brotli") is not None  # httpx decodes br only with it
        else []
    )
    return [
        Hostile(
            "gzip bomb on a 302",
            lambda: compressed_answer("302 Found", "gzip", bomb("gzip", INFLATED)),
            up,
        ),
        *brotli,
        Hostile(
            "gzip bomb on a 302 over the limit on the wire",
            lambda: compressed_answer("302 Found", "gzip", bomb("gzip", INFLATED)),
            Reason.BODY_TOO_LARGE,
            max_body_bytes=64_000,
        ),
        Hostile(
            "deflate bomb on a 301",
            lambda: compressed_answer(
                "301 Moved Permanently", "deflate", bomb("deflate", INFLATED)
            ),
            up,
        ),
        Hostile(
            "stacked gzip, gzip bomb on a 307",
            lambda: compressed_answer(
                "307 Temporary Redirect", "gzip, gzip", bomb("gzip, gzip", INFLATED)
            ),
            up,
        ),
        Hostile(
            "gzip bomb on a 200",
            lambda: compressed_answer("200 OK", "gzip", bomb("gzip", INFLATED), location=None),
            up,
        ),
        Hostile("cookie flood on redirects", lambda: cookie_flood_redirects, up),
        Hostile("cookie flood on the answer", lambda: cookie_flood_answer, up),
        Hostile("endless body", lambda: endless_body, Reason.BODY_TOO_LARGE),
        Hostile("endless redirect body", lambda: endless_redirect_body, Reason.BODY_TOO_LARGE),
        Hostile("dripping body", lambda: dripping_body(0.2), Reason.TIMEOUT),
        # At a few microseconds of parsing per chunk, the deadline would come long before the
        # limit: the number of chunks ends it first.
        Hostile(
            "body in one-byte chunks",
            lambda: tiny_chunks(b"1\r\nx\r\n"),
            Reason.PROTOCOL,
            max_body_bytes=64 * 1_048_576,
        ),
        Hostile(
            "body in one-byte chunks with extensions",
            lambda: tiny_chunks(b"0001;ext=1\r\nx\r\n"),
            Reason.PROTOCOL,
            max_body_bytes=64 * 1_048_576,
        ),
        Hostile("slow headers", lambda: slow_headers, Reason.TIMEOUT),
        Hostile("header flood", lambda: header_flood, Reason.PROTOCOL),
        Hostile("endless header line", lambda: endless_header_line, Reason.PROTOCOL),
        Hostile("informational flood", lambda: informational_flood, Reason.PROTOCOL),
        Hostile("never answers", lambda: silent, Reason.TIMEOUT),
        Hostile("TLS handshake that stalls", lambda: silent, Reason.TIMEOUT, scheme="https"),
        # aiohttp reads a reset after part of the body as a body cut short.
        Hostile("reset mid-body", lambda: reset_mid_body, Reason.PROTOCOL),
        Hostile("reset before answering", lambda: reset_before_answering, Reason.CONNECTION),
        Hostile("bad status line", lambda: garbage(), Reason.PROTOCOL),
        Hostile("body cut short", lambda: truncated_body, Reason.PROTOCOL),
        Hostile("redirect loop", redirect_loop, Reason.TOO_MANY_REDIRECTS),
        Hostile("new long redirects", new_long_redirects, Reason.TOO_MANY_REDIRECTS),
    ]


ZOO = _zoo()
