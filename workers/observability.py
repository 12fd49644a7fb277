"""Sentry for the worker, beat and CLI processes: scrubbed events and classified failures."""

from __future__ import annotations

import errno
import logging
import re
import socket
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import kombu.exceptions
import psycopg
import pydantic
import redis.exceptions
import sentry_sdk
import sqlalchemy.exc
from billiard.exceptions import SoftTimeLimitExceeded
from celery.exceptions import ImproperlyConfigured, MaxRetriesExceededError, Retry
from pydantic import BaseModel, SecretStr
from sentry_sdk.integrations.celery import CeleryIntegration

from beat_schedule import BEAT_SCHEDULE, every_seconds
from models.config import ConfigError, EventopsConfig
from workers.settings import Settings

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
EMAIL = "[email]"

INFRASTRUCTURE = "infrastructure"
TRANSIENT = "transient"
CONFIGURATION = "configuration"
PERMANENT = "permanent"

# A permanent failure recurs on every run until the code changes; unlike a transient one it
# never heals by itself, so it pages like an outage.
PRIORITY = {INFRASTRUCTURE: "high", CONFIGURATION: "high", PERMANENT: "high", TRANSIENT: "medium"}
LEVEL = {"high": "error", "medium": "warning"}

# Shorter secret values would redact ordinary words all over the event.
MIN_SECRET_LENGTH = 4


# --- failure classification -------------------------------------------------------------

_SOCKET_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.EHOSTDOWN,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.ENETRESET,
    errno.ENOTCONN,
    errno.EPIPE,
    errno.EADDRNOTAVAIL,
    # A full disk stops backups and Postgres alike: infrastructure, not a bug.
    errno.ENOSPC,
    errno.EDQUOT,
}

# SQLSTATE classes: 28 bad credentials, 3D unknown database (configuration); 57014 query
# cancelled (statement_timeout), 40 serialization failure or deadlock, 55P03 lock timeout.
_CONFIG_SQLSTATE_PREFIXES = ("28", "3D")
_TRANSIENT_SQLSTATE_PREFIXES = ("57014", "40", "55P03")


def classify(exc: BaseException) -> tuple[str, str]:
    """(failure class, priority) of an exception that ended a task.

    An exception may declare its class itself with a `failure_class` attribute (for example
    a "backup key is not set" error saying `configuration`), so core code needs no import
    from here. A wrapper (SQLAlchemy's DBAPIError, `raise ... from`) is judged by what it
    wraps when the wrapper alone says nothing.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        failure_class = _classify_one(current)
        if failure_class != PERMANENT:
            return failure_class, PRIORITY[failure_class]
        current = _underlying(current)
    return PERMANENT, PRIORITY[PERMANENT]


def _underlying(exc: BaseException) -> BaseException | None:
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        return orig
    return exc.__cause__


def _classify_one(exc: BaseException) -> str:
    declared = getattr(exc, "failure_class", None)
    if declared in PRIORITY:
        return str(declared)
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and isinstance(exc.orig, BaseException):
        # The driver's error says more (a bad password, a cancelled query) than the wrapper.
        inner = _classify_one(exc.orig)
        if inner != PERMANENT:
            return inner
    # Configuration first: a refused password is an OperationalError and a ConnectionError
    # too, but retrying it will never help.
    if isinstance(
        exc,
        ConfigError
        | pydantic.ValidationError
        | ImproperlyConfigured
        | redis.exceptions.AuthenticationError
        | redis.exceptions.AuthorizationError,
    ):
        return CONFIGURATION
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.Error):
        if sqlstate.startswith(_CONFIG_SQLSTATE_PREFIXES) or (
            "password authentication failed" in str(exc)
        ):
            return CONFIGURATION
        if sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
            return TRANSIENT
    if isinstance(
        exc,
        TimeoutError  # also socket.timeout and asyncio.TimeoutError
        | SoftTimeLimitExceeded
        | Retry
        | MaxRetriesExceededError
        | redis.exceptions.TimeoutError
        | sqlalchemy.exc.TimeoutError,  # the pool had no free connection in time
    ):
        return TRANSIENT
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return INFRASTRUCTURE
    if isinstance(
        exc,
        sqlalchemy.exc.OperationalError
        | sqlalchemy.exc.InterfaceError
        | sqlalchemy.exc.DisconnectionError
        | redis.exceptions.ConnectionError
        | kombu.exceptions.OperationalError
        | ConnectionError
        | socket.gaierror
        | socket.herror,
    ):
        return INFRASTRUCTURE
    if isinstance(exc, OSError) and exc.errno in _SOCKET_ERRNOS:
        return INFRASTRUCTURE
    return PERMANENT


# --- scrubbing ----------------------------------------------------------------------------

# `scheme://user:password@host`: the userinfo goes, whatever the scheme.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@?#'\"<>]+@")
# `?token=...`, `&X-Amz-Signature=...`, `password=...` in URLs, log lines and reprs.
_SECRET_PARAM = re.compile(
    r"(?i)(?<![\w.-])((?:[\w.-]*?(?:token|secret|signature|password|passwd|credential"
    r"|api[_-]?key|access[_-]?key|private[_-]?key)[\w.-]*)|key|sig|pwd|auth)=([^&#\s'\"<>]+)"
)
# `'Authorization': 'Bearer ...'` in a repr or JSON text.
_SECRET_QUOTED = re.compile(
    r"(?i)(['\"])([\w.-]*(?:token|secret|password|passwd|api[_-]?key|authorization|cookie"
    r"|credential)[\w.-]*)\1(\s*:\s*)(['\"])(?:(?!\4).)*\4"
)
# `Authorization: Basic ...` or `Cookie: a=b` as a header line.
_SECRET_HEADER = re.compile(
    r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key|x-auth-token)"
    r"(\s*[:=]\s*)(?!\[redacted\])[^\r\n]+"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+(?!\[redacted\])[A-Za-z0-9._~+/=-]{6,}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")

_KEY_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "dsn",
)
_KEYS = {"auth", "x_api_key", "session", "sessionid", "pwd", "signature"}


def _secret_key(key: str) -> bool:
    name = key.lower().replace("-", "_")
    return name in _KEYS or any(word in name for word in _KEY_WORDS)


class Scrubber:
    """Removes this process's secret values and anything shaped like a secret or an e-mail."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                # As written, and as it appears inside a URL.
                values.update({secret, quote(secret, safe=""), quote(secret, safe="/:@")})
        self.secrets = sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len)[::-1]
        self._secrets_re = (
            re.compile("|".join(re.escape(s) for s in self.secrets)) if self.secrets else None
        )

    def text(self, value: str) -> str:
        if self._secrets_re is not None:
            value = self._secrets_re.sub(REDACTED, value)
            value = self._cut_truncated_tail(value)
        value = _USERINFO.sub(rf"\1{REDACTED}@", value)
        value = _SECRET_QUOTED.sub(rf"\1\2\1\3\4{REDACTED}\4", value)
        value = _SECRET_PARAM.sub(rf"\1={REDACTED}", value)
        value = _SECRET_HEADER.sub(rf"\1\2{REDACTED}", value)
        value = _BEARER.sub(rf"\1 {REDACTED}", value)
        return _EMAIL.sub(EMAIL, value)

    def _cut_truncated_tail(self, value: str) -> str:
        # The SDK may cut long strings (`max_value_length`) and end them with "...": a cut
        # through a secret leaves its start, which no longer matches the whole value.
        if not value.endswith("..."):
            return value
        body = value[:-3]
        for secret in self.secrets:
            for size in range(len(secret) - 1, MIN_SECRET_LENGTH - 1, -1):
                if body.endswith(secret[:size]):
                    return body[:-size] + REDACTED + "..."
        return value

    def scrub(self, value: Any) -> Any:
        """A copy of `value` with every string scrubbed and every secret-named key's value
        replaced, however deep."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes | bytearray):
            return self.text(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                new_key = self.text(key) if isinstance(key, str) else key
                if isinstance(key, str) and _secret_key(key) and item not in (None, "", {}, []):
                    out[new_key] = REDACTED
                else:
                    out[new_key] = self.scrub(item)
            return out
        if isinstance(value, list | tuple):
            items = [self.scrub(item) for item in value]
            # A header list [["Authorization", "Bearer x"], ...]: the pair's name decides.
            if len(items) == 2 and isinstance(items[0], str) and _secret_key(items[0]):
                items[1] = REDACTED
            return items if isinstance(value, list) else tuple(items)
        return value


def secret_values(settings: Settings, config: EventopsConfig | None = None) -> list[str]:
    """Every secret this process holds, and the parts of them worth hiding on their own:
    SecretStr values of the settings and the config, passwords in service URLs, and the
    token-like segments of Apprise URLs (`slack://T000/B000/XXXX`)."""
    values: list[str] = []
    for secret in _secrets_in(settings):
        values.append(secret)
        if "://" in secret:
            values.extend(_url_secret_parts(secret))
            values.extend(_url_password(secret))
    for url in (settings.database_url, settings.broker_url):
        if url:
            values.extend(_url_password(url))
    if config is not None:
        for secret in _secrets_in(config):
            values.append(secret)
            if "://" in secret:
                values.extend(_url_secret_parts(secret))
                values.extend(_url_password(secret))
    return values


def _secrets_in(value: Any) -> Iterator[str]:
    if isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            item = getattr(value, name)
            # A default written in the source (Flower's "eventops") is no secret, and hiding
            # it would redact the project's own name from every event.
            if isinstance(item, SecretStr) and item == field.default:
                continue
            yield from _secrets_in(item)
    elif isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secrets_in(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _secrets_in(item)


def _url_password(url: str) -> list[str]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def _url_secret_parts(url: str) -> list[str]:
    """Path segments, query values, userinfo, and a host without dots (Apprise puts tokens
    there: `slack://TokenA/TokenB/TokenC`). Short or word-like parts and real host names are
    left alone: they would redact ordinary text."""
    rest = url.split("://", 1)[1]
    authority, tail = re.match(r"([^/?#]*)(.*)", rest, re.DOTALL).groups()  # type: ignore[union-attr]
    userinfo, _, host = authority.rpartition("@")
    parts = [p for p in userinfo.split(":") if p]
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if "." not in host:
        parts.append(host)
    parts.extend(re.split(r"[/?&=#,;]", tail))
    out = []
    for part in parts:
        part = unquote(part)
        if len(part) < 8 or re.fullmatch(r"[A-Za-z_.-]{8,19}", part):
            continue
        out.append(part)
    return out


# --- Sentry hooks -------------------------------------------------------------------------


def make_before_send(scrubber: Scrubber, process: str) -> Any:
    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        event = scrubber.scrub(event)
        if event.get("type") == "check_in":
            return event  # a Crons check-in: no tags, no level in its schema
        tags = event.get("tags")
        if not isinstance(tags, dict):
            tags = event["tags"] = {}
        tags["process"] = process
        exc_info = hint.get("exc_info")
        if exc_info and isinstance(exc_info[1], BaseException):
            failure_class, priority = classify(exc_info[1])
            tags["failure_class"] = failure_class
            tags["priority"] = priority
            event["level"] = LEVEL[priority]
        return event

    return before_send


def make_before_breadcrumb(scrubber: Scrubber) -> Any:
    def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        # before_send scrubs the breadcrumbs again after serialisation (reprs of objects);
        # this pass keeps raw secrets out of the scope's buffer in the meantime.
        return scrubber.scrub(crumb)

    return before_breadcrumb


def crons_excluded(beat_schedule: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Beat entries Sentry Crons cannot monitor: intervals under a minute or not whole
    minutes (the SDK warns on every tick about them). The beat heartbeat check watches
    those ticks instead."""
    excluded = []
    for name, entry in beat_schedule.items():
        seconds = every_seconds(entry)
        if seconds is not None and (seconds < 60 or seconds % 60):
            excluded.append(f"^{re.escape(name)}$")
    return excluded


def init_sentry(settings: Settings, *, process: str, config: EventopsConfig | None = None) -> bool:
    """Start Sentry in this process; False (and nothing sent) without a DSN or on failure.

    `process` (worker, beat, cli) becomes a tag. Call it again in each forked child.
    """
    if settings.sentry_dsn is None or not settings.sentry_dsn.get_secret_value():
        return False
    try:
        scrubber = Scrubber(secret_values(settings, config))
        with warnings.catch_warnings():
            # SDK 2.7x deprecates send_default_pii for data_collection, but data_collection
            # switches the SDK's own EventScrubber off and older 2.x releases reject it.
            warnings.filterwarnings("ignore", "The send_default_pii option", DeprecationWarning)
            sentry_sdk.init(
                dsn=settings.sentry_dsn.get_secret_value(),
                release=settings.release,
                environment=settings.environment,
                send_default_pii=False,
                # Tasks hold platform rows (vendors, customers) in their locals: names, phone
                # numbers and addresses no pattern can recognise. The traceback, the task name
                # and its id arguments are enough to debug; the values are not worth the risk.
                include_local_variables=False,
                max_request_body_size="never",
                before_send=make_before_send(scrubber, process),
                before_send_transaction=make_before_send(scrubber, process),
                before_breadcrumb=make_before_breadcrumb(scrubber),
                integrations=[
                    CeleryIntegration(
                        monitor_beat_tasks=True,
                        exclude_beat_tasks=crons_excluded(BEAT_SCHEDULE),
                    )
                ],
            )
    except Exception:
        # Monitoring of the monitor must never stop it: run without Sentry.
        log.warning("Sentry could not start; running without it", exc_info=True)
        return False
    return True


def init_sentry_from_environment(process: str) -> bool:
    """The Celery signal hooks' entry: settings and config as the process reads them."""
    from models.config import ConfigError
    from workers.settings import get_config, get_settings

    try:
        settings = get_settings()
    except ConfigError:
        return False  # the command reports bad settings itself, one line per problem
    try:
        try:
            config: EventopsConfig | None = get_config()
        except Exception:
            # The worker reports a bad config itself; Sentry still starts, scrubbing the
            # channel URLs by pattern only.
            config = None
        return init_sentry(settings, process=process, config=config)
    except Exception:
        log.warning("Sentry could not start; running without it", exc_info=True)
        return False
