"""`eventops flower`: Flower behind a door of our own, basic auth on every route and a limit
on wrong passwords per client address.

Flower 2.x guards its pages with `@tornado.web.authenticated`, route by route, and its
`/metrics` handler (flower/views/monitor.py) has no such decorator: task names, worker host
names and counts were readable by anyone. Its basic auth answered every wrong password
with a plain 401, as fast as one could ask. So the check moves in front of the routing:
`GuardedFlower.find_handler` sees every request before any of Flower's handlers does
(pages, API, /metrics, static files, unknown paths) and answers it itself unless the
credentials are right:

- no or malformed credentials: 401 with the Basic challenge (what makes a browser ask);
- wrong credentials: 401, counted against the client's address by the dashboard's
  `web.auth.LoginLimiter`; from the 6th failure within a minute every request from that
  address, right password or not, is 429 with Retry-After until the window passes;
- `/healthcheck` stays open: it answers a constant "OK" (nothing a 401 does not already
  say) and lets a load balancer or orchestrator, which cannot send credentials, see that
  Flower is up.

The address is the socket's peer: Flower's X-Real-IP/X-Forwarded-For handling (`xheaders`)
is forced off, since it believes the headers from anyone. Flower's own basic auth stays on
behind ours, because its cross-site checks on POSTs (`check_xsrf_cookie`) only run with it.
The password reaches Flower as an option set in this process, never through argv or an
environment variable (FLOWER_BASIC_AUTH split a password at its commas).
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import hmac
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tornado.web
from flower.app import Flower
from tornado.httputil import HTTPServerRequest

from web.auth import LoginLimiter

# Answered without credentials; see the module docstring for why.
OPEN_PATHS = ("/healthcheck",)


@dataclass(frozen=True)
class Refusal:
    status: int
    headers: dict[str, str]
    text: str


CHALLENGE = {"WWW-Authenticate": 'Basic realm="flower"'}


@dataclass
class Guard:
    """Decides, from a request's path, Authorization header and client address, whether it
    may reach Flower; None means yes. The clock is injectable for tests."""

    user: str
    password: str
    url_prefix: str = ""
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    clock: Callable[[], float] = time.monotonic

    def refusal(self, path: str, authorization: str | None, client: str) -> Refusal | None:
        prefix = "/" + self.url_prefix.strip("/") if self.url_prefix.strip("/") else ""
        if path in {prefix + open_path for open_path in OPEN_PATHS}:
            return None
        now = self.clock()
        keys = [f"addr:{client}"]
        wait = self.limiter.retry_after(keys, now=now)
        if wait:
            return Refusal(429, {"Retry-After": str(wait)}, "Too many failed logins.\n")
        if not authorization:
            return Refusal(401, CHALLENGE, "Access denied\n")
        if not self._valid(authorization):
            self.limiter.failed(keys, now=now)
            return Refusal(401, CHALLENGE, "Access denied\n")
        # No reset on success, unlike the dashboard's one login: every Flower request carries
        # the password, so an operator's page polling from the address an attacker shares (a
        # NAT, an office) would clear the attacker's count every few seconds.
        return None

    def _valid(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = f"{self.user}:{self.password}".encode()
        return hmac.compare_digest(given, expected)


@tornado.web.stream_request_body
class _Refused(tornado.web.RequestHandler):
    """Answers a refused request, whatever its method, before any of Flower's code runs and
    before its body arrives: streamed, so tornado runs `prepare` on the headers and drops
    the connection after the answer, instead of reading up to 100 MB of body first."""

    def initialize(self, refusal: Refusal) -> None:
        self.refusal = refusal

    def data_received(self, chunk: bytes) -> None:
        """Dropped: nothing is kept of a refused request."""

    def check_xsrf_cookie(self) -> None:
        """Nothing to protect: a refusal changes nothing (tornado checks before prepare)."""

    def prepare(self) -> None:
        self.set_status(self.refusal.status)
        for name, value in self.refusal.headers.items():
            self.set_header(name, value)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        # Tornado closes the connection after an answer given before the body was read.
        self.set_header("Connection", "close")
        self.finish(self.refusal.text)


class GuardedFlower(Flower):
    """Flower's tornado app with the guard in front of its routing table."""

    def __init__(self, *args: Any, guard: Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def find_handler(self, request: HTTPServerRequest, **kwargs: Any) -> Any:
        refusal = self.guard.refusal(
            request.path, request.headers.get("Authorization"), request.remote_ip or "unknown"
        )
        if refusal is not None:
            return self.get_handler_delegate(request, _Refused, {"refusal": refusal})
        return super().find_handler(request, **kwargs)


def serve(port: int, address: str) -> None:
    """Run Flower until SIGTERM or Ctrl-C: flower.command.flower's steps, with our app."""
    from flower import command
    from flower.urls import settings as flower_settings
    from tornado.options import options

    from workers.app import app
    from workers.settings import get_settings

    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    command.apply_env_options()
    command.apply_options(
        "flower",
        [
            f"--port={port}",
            f"--address={address}",
            "--persistent=True",
            f"--db={settings.var_dir / 'flower.db'}",
        ],
    )
    password = settings.flower_password.get_secret_value()
    options.basic_auth = [f"{settings.flower_user}:{password}"]
    options.xheaders = False
    command.extract_settings()
    command.setup_logging()
    guard = Guard(settings.flower_user, password, url_prefix=options.url_prefix or "")
    flower_app = GuardedFlower(capp=app, options=options, guard=guard, **flower_settings)
    atexit.register(flower_app.stop)
    signal.signal(signal.SIGTERM, command.sigterm_handler)
    bound = flower_app.start_http_server()
    command.print_banner(app, "ssl_options" in flower_settings, bound)
    # SIGTERM's handler exits through SystemExit; either way, atexit stops Flower cleanly.
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        flower_app.start()
