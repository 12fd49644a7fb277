"""The dashboard's login: one user from the settings, signed cookie sessions, CSRF checks.

- The session is a cookie holding {user, csrf token, issued at}, signed with HMAC-SHA256
  under a key derived from EVENTOPS_DASHBOARD_SECRET and the password, so changing either
  logs everyone out. HttpOnly (scripts cannot read it), SameSite=Lax (other sites' forms and
  fetches do not carry it), Secure when the site is https, valid for 12 hours.
- Every state-changing request needs the session's CSRF token (synchronizer token: the page
  carries it in a meta tag, scripts send it as X-CSRF-Token, forms as `csrf_token`), and its
  Origin (or, without one, Referer) must be this site: EVENTOPS_DASHBOARD_PUBLIC_URL, or
  the address the connection reached; never the Host header, which the client writes.
- Failed logins are limited per client address and per user name (a few a minute), so
  guessing the password from one place is slow; the limiter lives in the serving process.
  The address is the socket's peer, or X-Forwarded-For only when that peer is one of
  EVENTOPS_TRUSTED_PROXIES (`eventops dashboard` tells uvicorn so).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import HTTPException, Request

from workers.settings import Settings

COOKIE = "eventops_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_MAX_AGE_S = 12 * 3600
# Failed logins allowed per address (and per user name) within the window.
LOGIN_FAILURES_ALLOWED = 5
LOGIN_WINDOW_S = 60.0


@dataclass(frozen=True)
class DashboardSession:
    user: str
    csrf: str
    issued_at: int


class LoginRequired(Exception):
    """A page was asked for without a session: the app redirects to /login."""

    def __init__(self, next_path: str):
        self.next_path = next_path


def _persisted_secret(path: Path, nbytes: int) -> str:
    """A random secret generated once and kept in var/ (0600), like the demo backup key."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(nbytes)
        # Created 0600 from the start: the secret is never readable by others, even briefly.
        # O_EXCL: two processes starting at once keep whichever wrote first.
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process is writing it this instant: wait for its content.
            for _ in range(50):
                if value := path.read_text().strip():
                    return value
                time.sleep(0.02)
            return path.read_text().strip()
        with os.fdopen(handle, "w") as out:
            out.write(value + "\n")
    return path.read_text().strip()


def password_file(settings: Settings) -> Path:
    return settings.var_dir / "dashboard.password"


def secret_file(settings: Settings) -> Path:
    return settings.var_dir / "dashboard.secret"


def password_source(settings: Settings) -> str:
    """Where the password comes from, for banners (never the password itself)."""
    if settings.dashboard_password is not None and settings.dashboard_password.get_secret_value():
        return "EVENTOPS_DASHBOARD_PASSWORD"
    return str(password_file(settings))


def dashboard_password(settings: Settings) -> str:
    # An empty value (compose's `${VAR:-}`) counts as unset.
    if settings.dashboard_password is not None and settings.dashboard_password.get_secret_value():
        return settings.dashboard_password.get_secret_value()
    return _persisted_secret(password_file(settings), 12)


def dashboard_secret(settings: Settings) -> str:
    if settings.dashboard_secret is not None and settings.dashboard_secret.get_secret_value():
        return settings.dashboard_secret.get_secret_value()
    return _persisted_secret(secret_file(settings), 32)


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL as browsers write an Origin header: lower case, no
    default port, IPv6 in brackets; None when it is not an http(s) URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    default = 443 if scheme == "https" else 80
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{scheme}://{_bracketed(parts.hostname)}{suffix}"


def site_origins(scheme: str, host: str, port: int | None) -> set[str]:
    """The origins of the site at scheme://host:port; on loopback every loopback name of
    the port, since http://localhost:8600 and http://127.0.0.1:8600 are the same page."""
    suffix = f":{port}" if port is not None else ""
    hosts = LOOPBACK_HOSTS if _is_loopback(host) else {host}
    return {
        origin
        for name in hosts
        if (origin := origin_of(f"{scheme}://{_bracketed(name)}{suffix}")) is not None
    }


class LoginLimiter:
    """Sliding window of failed logins per key (client address, user name)."""

    def __init__(
        self,
        allowed: int = LOGIN_FAILURES_ALLOWED,
        window_s: float = LOGIN_WINDOW_S,
        max_keys: int = 10_000,
    ):
        self.allowed = allowed
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, keys: list[str], now: float | None = None) -> int:
        """Seconds until another attempt is allowed (0: allowed now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        with self._lock:
            for key in keys:
                failures = self._failures.get(key)
                if not failures:
                    continue
                while failures and failures[0] <= now - self.window_s:
                    failures.popleft()
                if len(failures) >= self.allowed:
                    wait = max(wait, failures[0] + self.window_s - now)
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
            if len(self._failures) > self.max_keys:
                self._shrink(now)

    def _shrink(self, now: float) -> None:
        """Bounded memory under a spray of addresses, without forgetting a lockout: drop
        the keys whose failures all left the window, then the stalest address keys. User
        keys stay (clearing everything let a spray of addresses reset the lock on the
        account being guessed)."""
        for key in [k for k, f in self._failures.items() if f[-1] <= now - self.window_s]:
            del self._failures[key]
        excess = len(self._failures) - self.max_keys // 2
        if excess > 0:
            stalest = sorted(
                (f[-1], k) for k, f in self._failures.items() if not k.startswith("user:")
            )
            for _, key in stalest[:excess]:
                del self._failures[key]

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


class Auth:
    def __init__(self, settings: Settings):
        self.user = settings.dashboard_user
        self._password = dashboard_password(settings)
        # The password is part of the key: a new password voids every old session.
        self._key = hmac.new(
            dashboard_secret(settings).encode(), self._password.encode(), hashlib.sha256
        ).digest()
        self.limiter = LoginLimiter()
        url = settings.dashboard_public_url
        self.public_origin = origin_of(url) if url else None
        public = urlsplit(self.public_origin) if self.public_origin else None
        self.public_origins = (
            site_origins(public.scheme, public.hostname or "", public.port) if public else None
        )

    # -- credentials and cookies ------------------------------------------------------------

    def check_credentials(self, user: str, password: str) -> bool:
        user_ok = hmac.compare_digest(user.encode(), self.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self._password.encode())
        return user_ok and password_ok

    def new_session(self, user: str) -> tuple[DashboardSession, str]:
        session = DashboardSession(user, secrets.token_urlsafe(32), int(time.time()))
        payload = json.dumps(
            {"u": session.user, "c": session.csrf, "t": session.issued_at},
            separators=(",", ":"),
        ).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return session, f"{body}.{self._sign(body)}"

    def _sign(self, body: str) -> str:
        digest = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def read_cookie(self, value: str | None, now: float | None = None) -> DashboardSession | None:
        if not value or "." not in value:
            return None
        body, signature = value.rsplit(".", 1)
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = DashboardSession(str(data["u"]), str(data["c"]), int(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None
        now = time.time() if now is None else now
        if not 0 <= now - session.issued_at <= SESSION_MAX_AGE_S or session.user != self.user:
            return None
        return session

    # -- request checks ---------------------------------------------------------------------

    def session_of(self, request: Request) -> DashboardSession | None:
        return self.read_cookie(request.cookies.get(COOKIE))

    def require_api(self, request: Request) -> DashboardSession:
        session = self.session_of(request)
        if session is None:
            raise HTTPException(status_code=401, detail="login required")
        return session

    def require_page(self, request: Request) -> DashboardSession:
        session = self.session_of(request)
        if session is None:
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(path)
        return session

    def allowed_origins(self, request: Request) -> set[str]:
        """The origins this site's own pages have. Never from the Host header, which the
        client writes: a page at evil.example that resolves to this server sends Host and
        Origin both evil.example.

        - EVENTOPS_DASHBOARD_PUBLIC_URL set: its origin only (any loopback name of its
          port when it is a loopback URL, as Compose's http://localhost:8600 is).
        - Unset: the address and port the request's connection reached (the socket's own,
          `scope["server"]`), any loopback name of it when that is loopback."""
        if self.public_origins is not None:
            return self.public_origins
        server = request.scope.get("server")
        if not server or server[1] is None:
            return set()
        scheme = str(request.scope.get("scheme", "http"))
        return site_origins(scheme, str(server[0]), int(server[1]))

    def check_origin(self, request: Request) -> None:
        """A state-changing request must come from this site's own pages."""
        origin = request.headers.get("origin")
        if origin is None:
            referer = request.headers.get("referer")
            if referer:
                origin = origin_of(referer) or "null"
        # Browsers always send Origin on POST fetches and forms; a client that sends neither
        # (curl, scripts) still needs the session and its token.
        if origin is not None and origin_of(origin) not in self.allowed_origins(request):
            raise HTTPException(status_code=403, detail="cross-site request refused (Origin)")

    def secure_cookies(self, request: Request) -> bool:
        """Secure cookies when the site is https: served so, or published so (TLS ends at
        a proxy that is not trusted for X-Forwarded-Proto)."""
        public_https = (self.public_origin or "").startswith("https://")
        return request.url.scheme == "https" or public_https

    def check_csrf(
        self, request: Request, session: DashboardSession, form_token: str | None = None
    ) -> None:
        self.check_origin(request)
        token = request.headers.get(CSRF_HEADER) or form_token or ""
        if not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise HTTPException(status_code=403, detail="missing or wrong CSRF token")
