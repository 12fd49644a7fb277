"""Demo of the monitored platform: health endpoints with fault switches, and a hook receiver.

The real platform is a Next.js app whose ``/api/health/{service}`` routes report on Stripe,
Mapbox and Supabase. This server answers the same routes so the probes have something real
to hit, lets a person (or a test) break a service on purpose through ``POST /faults/{service}``,
and receives the notifications the escalation pipeline sends (Apprise's ``json://`` plugin)
so that the whole loop, from a failing endpoint to a message, can be watched on one machine.

Run it with ``python -m demo.platform --port 8400 --fail supabase``. Standard library only,
so it starts anywhere the project does.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import html
import json
import logging
import select
import signal
import socket
import sys
import threading
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

SERVICES: tuple[str, ...] = ("stripe", "mapbox", "supabase")
MODES: tuple[str, ...] = ("ok", "fail", "slow", "timeout", "flap")
DEFAULT_SLOW_DELAY = 8.0
# Long enough for any demo, short enough that a typo cannot park a thread for a day.
MAX_SLOW_DELAY = 3600.0
MAX_BODY_BYTES = 1024 * 1024
# An oversized body up to this size is read and dropped so the client gets its 413 instead
# of a connection reset; anything bigger is not worth reading.
MAX_DRAIN_BYTES = 16 * MAX_BODY_BYTES
MAX_NOTIFICATIONS = 1000
# How often a held request looks up to see whether the server stops or the client left.
POLL_SECONDS = 0.05

FAILURE_MESSAGES: dict[str, str] = {
    "stripe": "Stripe API unreachable: connection reset by peer",
    "mapbox": "Mapbox geocoding API answered 502 Bad Gateway",
    "supabase": "database connection refused",
}


@dataclass(frozen=True)
class Fault:
    """The switch position of one service; ``delay`` only matters in ``slow`` mode."""

    mode: str = "ok"
    delay: float = DEFAULT_SLOW_DELAY

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "delay": self.delay}


class DemoPlatform:
    """The demo platform server; ``start()`` serves in a daemon thread until ``stop()``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        fail: Iterable[str] = (),
        slow: Iterable[str] = (),
        hooks_file: str | Path | None = None,
        slow_delay: float = DEFAULT_SLOW_DELAY,
    ) -> None:
        self.host = host
        self.port = port
        self.hooks_file = Path(hooks_file) if hooks_file is not None else None
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {service: Fault() for service in SERVICES}
        self._flap_counts: dict[str, int] = dict.fromkeys(SERVICES, 0)
        self._notifications: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=MAX_NOTIFICATIONS
        )
        self._hooks_handle: IO[str] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()
        for service in fail:
            self.set_fault(service, "fail")
        for service in slow:
            self.set_fault(service, "slow", slow_delay)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> DemoPlatform:
        if self._server is not None:
            raise RuntimeError("the demo platform is already started")
        self.stopping.clear()
        # Bind first: a busy port should not leave the hooks file open behind it.
        server = _Server((self.host, self.port), self)
        if self.hooks_file is not None:
            try:
                self.hooks_file.parent.mkdir(parents=True, exist_ok=True)
                self._hooks_handle = self.hooks_file.open("a", encoding="utf-8")
            except OSError:
                server.server_close()
                raise
        self._server = server
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_SECONDS},
            name="demo-platform",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        # Set first so held requests (slow, timeout) let go before we wait for the loop.
        self.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None
        with self._lock:
            if self._hooks_handle is not None:
                self._hooks_handle.close()
                self._hooks_handle = None

    def __enter__(self) -> DemoPlatform:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the demo platform is not started")
        host, port = self._server.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    # -- faults ------------------------------------------------------------------------------

    def set_fault(self, service: str, mode: str, delay: float | None = None) -> Fault:
        """Switch one service; raises ``ValueError`` naming the problem on bad input."""
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if delay is None:
            delay = DEFAULT_SLOW_DELAY
        # bool is an int; "delay": true is a mistake, not one second.
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise ValueError(f"delay must be a number of seconds, not {delay!r}")
        if not 0 <= delay <= MAX_SLOW_DELAY:
            raise ValueError(f"delay must be between 0 and {MAX_SLOW_DELAY:g} seconds")
        fault = Fault(mode, float(delay))
        with self._lock:
            self._faults[service] = fault
            self._flap_counts[service] = 0
        return fault

    @property
    def faults(self) -> dict[str, Fault]:
        with self._lock:
            return dict(self._faults)

    def _next_health(self, service: str) -> tuple[str, float]:
        """The behaviour for this request: ``ok``, ``fail``, ``slow`` or ``timeout``, and delay."""
        with self._lock:
            fault = self._faults[service]
            if fault.mode != "flap":
                return fault.mode, fault.delay
            count = self._flap_counts[service]
            self._flap_counts[service] = count + 1
        # Fail first, so the first probe after switching sees the fault.
        return ("fail" if count % 2 == 0 else "ok"), fault.delay

    # -- notifications -----------------------------------------------------------------------

    @property
    def notifications(self) -> list[dict[str, Any]]:
        """Received notifications, oldest first (at most the last 1000)."""
        with self._lock:
            return list(self._notifications)

    def record_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        record = dict(payload)
        record["received_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
            self._notifications.append(record)
            if self._hooks_handle is not None:
                self._hooks_handle.write(line + "\n")
                # Flushed per line so `tail -f` and tests see each message as it lands.
                self._hooks_handle.flush()
        return record


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog of 5 delays a burst of probes' connections by a second,
    # enough to turn healthy checks with short timeouts into false timeouts.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], platform: DemoPlatform) -> None:
        self.platform = platform
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        # Idle keep-alive connections would otherwise hold their threads until the client
        # closes them; stop() should leave nothing behind.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        # A client that gave up on a slow answer, or a connection cut by stop(), is routine.
        if isinstance(error, ConnectionError | TimeoutError) or self.platform.stopping.is_set():
            log.debug("connection from %s ended: %r", client_address, error)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, like the real platform behind Vercel; probes reuse one client.
    protocol_version = "HTTP/1.1"
    server_version = "eventops-demo-platform"

    @property
    def platform(self) -> DemoPlatform:
        return cast(_Server, self.server).platform

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    # -- routing -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self._path()
        if path == "/":
            self._send_html(HTTPStatus.OK, self._index_page())
        elif path.startswith("/api/health/"):
            self._health(path.removeprefix("/api/health/"))
        elif path == "/faults":
            self._send_json(HTTPStatus.OK, self._faults_json())
        elif path == "/hooks":
            self._send_html(HTTPStatus.OK, self._hooks_page())
        elif path == "/hooks.json":
            self._send_json(HTTPStatus.OK, list(reversed(self.platform.notifications)))
        elif path.startswith("/faults/") or path == "/hooks/notify":
            self._send_method_not_allowed("POST")
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path {path!r}"})

    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        path = self._path()
        if path.startswith("/faults/"):
            self._set_fault(path.removeprefix("/faults/"), body)
        elif path == "/hooks/notify":
            record = self.platform.record_notification(self._parse_notification(body))
            self._send_json(HTTPStatus.OK, {"ok": True, "received_at": record["received_at"]})
        elif path in ("/", "/faults", "/hooks", "/hooks.json") or path.startswith("/api/health/"):
            self._send_method_not_allowed("GET")
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such path {path!r}"})

    def _path(self) -> str:
        path = urlsplit(self.path).path
        return path.rstrip("/") or "/"

    # -- health ------------------------------------------------------------------------------

    def _health(self, service: str) -> None:
        if service not in SERVICES:
            self._send_json(
                HTTPStatus.NOT_FOUND, {"service": service, "error": f"unknown service {service!r}"}
            )
            return
        mode, delay = self.platform._next_health(service)
        if mode == "timeout":
            self._hold(None)
            # Nothing was sent, so the connection cannot carry another request.
            self.close_connection = True
            return
        if mode == "slow" and not self._hold(delay):
            self.close_connection = True
            return
        if mode == "fail":
            self._send_json(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"service": service, "status": "error", "message": FAILURE_MESSAGES[service]},
            )
            return
        self._send_json(HTTPStatus.OK, {"service": service, "status": "ok"})

    def _hold(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (forever if None) in small steps; False if the wait was cut short.

        A plain sleep would pin a thread per abandoned probe and keep stop() waiting, so the
        wait ends early when the server stops or the client hangs up.
        """
        stopping = self.platform.stopping
        remaining = seconds
        while remaining is None or remaining > 0:
            step = POLL_SECONDS if remaining is None else min(POLL_SECONDS, remaining)
            if stopping.wait(step) or self._client_gone():
                return False
            if remaining is not None:
                remaining -= step
        return True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            # Readable with no data means the peer closed; data would be a pipelined request.
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # -- faults ------------------------------------------------------------------------------

    def _faults_json(self) -> dict[str, Any]:
        return {service: fault.as_dict() for service, fault in self.platform.faults.items()}

    def _set_fault(self, service: str, body: bytes) -> None:
        # `curl -d '{"mode": "ok"}'` (the README's command) labels JSON as a form: a body
        # that is a JSON object is read as JSON whatever its Content-Type says.
        from_form = self._is_form() and not body.lstrip().startswith(b"{")
        try:
            request = self._parse_fault_request(body, from_form)
            fault = self.platform.set_fault(service, request["mode"], request.get("delay"))
        except ValueError as error:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(error)})
            return
        if from_form:
            # The index page's form; send the browser back to it.
            self._send_redirect("/")
            return
        self._send_json(HTTPStatus.OK, {"service": service, **fault.as_dict()})

    @staticmethod
    def _parse_fault_request(body: bytes, from_form: bool) -> dict[str, Any]:
        if from_form:
            fields = dict(parse_qsl(body.decode("utf-8", errors="replace")))
            request: dict[str, Any] = {"mode": fields.get("mode")}
            if fields.get("delay", "").strip():
                try:
                    request["delay"] = float(fields["delay"])
                except ValueError:
                    raise ValueError(f"delay must be a number, not {fields['delay']!r}") from None
            return request
        try:
            parsed = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError('body must be JSON like {"mode": "fail"}') from None
        if not isinstance(parsed, dict) or "mode" not in parsed:
            raise ValueError('body must be a JSON object with a "mode", like {"mode": "fail"}')
        if not isinstance(parsed["mode"], str):
            raise ValueError(f"mode must be a string, not {parsed['mode']!r}")
        return parsed

    # -- notifications -----------------------------------------------------------------------

    def _parse_notification(self, body: bytes) -> dict[str, Any]:
        text = body.decode("utf-8", errors="replace")
        if self._is_form():
            # Apprise's form:// plugin sends the same fields form-encoded.
            return dict(parse_qsl(text, keep_blank_values=True))
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return {"body": text}
        return parsed if isinstance(parsed, dict) else {"payload": parsed}

    # -- request and response plumbing -------------------------------------------------------

    def _is_form(self) -> bool:
        content_type = self.headers.get("Content-Type", "")
        return content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering an error (411, 400 or 413) instead."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send_json(HTTPStatus.LENGTH_REQUIRED, {"error": "send a Content-Length"})
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": "bad Content-Length"})
            return None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            if length <= MAX_DRAIN_BYTES:
                self._drain(length)
            self._send_json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"body is {length} bytes; the limit is {MAX_BODY_BYTES}"},
            )
            return None
        return self.rfile.read(length)

    def _drain(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                return
            length -= len(chunk)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: HTTPStatus, payload: Any) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self._send(status, "application/json", body)

    def _send_html(self, status: HTTPStatus, page: str) -> None:
        self._send(status, "text/html; charset=utf-8", page.encode("utf-8"))

    def _send_method_not_allowed(self, allowed: str) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        body = json.dumps({"error": f"use {allowed} here"}).encode()
        self.send_header("Allow", allowed)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # -- pages -------------------------------------------------------------------------------

    def _index_page(self) -> str:
        base = html.escape(self.platform.url)
        rows = []
        for service, fault in self.platform.faults.items():
            name = html.escape(service)
            options = "".join(
                f'<option value="{mode}"{" selected" if mode == fault.mode else ""}>{mode}</option>'
                for mode in MODES
            )
            rows.append(
                f'<tr><td><a href="/api/health/{name}">/api/health/{name}</a></td>'
                f"<td>{html.escape(fault.mode)}</td>"
                f'<td><form method="post" action="/faults/{name}">'
                f'<select name="mode">{options}</select> '
                f'delay <input name="delay" size="4" value="{fault.delay:g}"> s '
                f'<button type="submit">set</button></form></td></tr>'
            )
        examples = "\n".join(
            [
                f"curl {base}/api/health/supabase",
                f"curl {base}/faults",
                f'curl -X POST {base}/faults/supabase -d \'{{"mode": "fail"}}\'',
                f'curl -X POST {base}/faults/mapbox -d \'{{"mode": "slow", "delay": 3}}\'',
                f'curl -X POST {base}/faults/stripe -d \'{{"mode": "ok"}}\'',
            ]
        )
        return _page(
            "Demo platform",
            "<p>A stand-in for the platform's health endpoints, with switches to break them "
            "and a receiver for the notifications eventops sends.</p>"
            "<h2>Services</h2><table><tr><th>health endpoint</th><th>mode</th><th>switch</th>"
            f"</tr>{''.join(rows)}</table>"
            f'<p>Modes: {", ".join(MODES)}. <a href="/faults">/faults</a> as JSON.</p>'
            f"<h2>From a shell</h2><pre>{html.escape(examples)}</pre>"
            '<h2>Notifications</h2><p><a href="/hooks">/hooks</a> '
            '(<a href="/hooks.json">JSON</a>); Apprise URL '
            f"<code>json://{html.escape(self.platform.url.removeprefix('http://'))}"
            "/hooks/notify</code></p>",
        )

    def _hooks_page(self) -> str:
        notifications = list(reversed(self.platform.notifications))
        rows = "".join(
            "<tr>"
            f"<td>{_cell(item.get('received_at'))}</td>"
            f"<td>{_cell(item.get('type'))}</td>"
            f"<td>{_cell(item.get('title'))}</td>"
            f"<td><pre>{_cell(_message_of(item))}</pre></td>"
            "</tr>"
            for item in notifications
        )
        table = (
            "<table><tr><th>received</th><th>type</th><th>title</th><th>message</th></tr>"
            f"{rows}</table>"
            if notifications
            else "<p>No notifications yet.</p>"
        )
        return _page(
            "Notifications received",
            f"<p>{len(notifications)} shown, newest first; the page refreshes every 5 s. "
            '<a href="/hooks.json">JSON</a> · <a href="/">home</a></p>' + table,
            refresh=5,
        )


def _message_of(notification: dict[str, Any]) -> Any:
    # Bodies that were not an Apprise-style object are stored under "body" or "payload".
    for key in ("message", "body", "payload"):
        if key in notification:
            return notification[key]
    return None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return html.escape(text)


def _page(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>{meta}"
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;"
        "text-align:left;vertical-align:top}pre{margin:0;white-space:pre-wrap}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.platform", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8400, help="port to bind; 0 picks a free one (default 8400)"
    )
    parser.add_argument(
        "--fail", action="append", default=[], choices=SERVICES, help="start this service failing"
    )
    parser.add_argument(
        "--slow", action="append", default=[], choices=SERVICES, help="start this service slow"
    )
    parser.add_argument(
        "--slow-delay",
        type=float,
        default=DEFAULT_SLOW_DELAY,
        help="seconds a slow service takes to answer (default %(default)g)",
    )
    parser.add_argument("--hooks-file", help="append each received notification to this JSONL file")
    args = parser.parse_args(argv)

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: types.FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        platform = DemoPlatform(
            host=args.host,
            port=args.port,
            fail=args.fail,
            slow=args.slow,
            hooks_file=args.hooks_file,
            slow_delay=args.slow_delay,
        )
        try:
            platform.start()
        except OSError as error:
            print(
                f"demo platform: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr
            )
            return 1
        try:
            print(f"demo platform listening on {platform.url}", flush=True)
            # A timed wait keeps the main thread responsive to signals on every platform.
            while not stop_requested.wait(0.5):
                pass
        finally:
            platform.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
