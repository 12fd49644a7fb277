"""HTTP probes: many at once on one asyncio loop; every failure becomes an outcome with a reason."""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx

from core.aiohttp_transport import AiohttpTransport, BodyTooLarge, ProbeScope, probe_scope
from core.clock import utcnow
from core.netguard import AddressPolicy, BlockedAddress

USER_AGENT = "eventops-probe/0.1 (+https://eventpros.co.nz)"
MAX_REDIRECTS = 5


class Reason:
    """Why a probe failed: a short stable word that rules, dashboards and runbooks key on."""

    TIMEOUT = "timeout"
    REFUSED = "refused"
    DNS = "dns"
    TLS = "tls"
    CONNECTION = "connection_error"
    PROTOCOL = "protocol_error"
    BAD_STATUS = "bad_status"
    BODY_TOO_LARGE = "body_too_large"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    INVALID_URL = "invalid_url"
    BLOCKED_ADDRESS = "blocked_address"
    PROBE_ERROR = "probe_error"
    PROBE_LOST = "probe_lost"


@dataclass(frozen=True)
class ProbeTarget:
    check_id: int
    slot: datetime
    url: str
    method: str
    timeout_s: float
    expected_status: Sequence[int]
    max_body_bytes: int


@dataclass(frozen=True)
class ProbeResult:
    check_id: int
    slot: datetime
    observed_at: datetime
    status: str  # up | down | missed
    latency_ms: float | None
    http_status: int | None = None
    reason: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "up"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["slot"] = self.slot.isoformat()
        data["observed_at"] = self.observed_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeResult:
        return cls(
            **{
                **data,
                "slot": datetime.fromisoformat(data["slot"]),
                "observed_at": datetime.fromisoformat(data["observed_at"]),
            }
        )


def make_client(
    policy: AddressPolicy | None = None,
    keepalive: bool = True,
    ssl_context: ssl.SSLContext | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The long-lived client of a worker process (building one costs ~19 ms of CPU).

    With a policy, every connection (redirect hops included) is checked by the SSRF guard;
    workers always pass one (workers/runtime.py). The transport is aiohttp's HTTP/1.1 under
    httpx's API (core/aiohttp_transport.py; measured against the alternatives by
    bench/transport_bench.py), with no connection limit; `keepalive=False` opens a new
    connection per request. `ssl_context` replaces the default trust store (tests use it
    to trust their own CA). `transport` replaces the whole transport (the benchmark's
    comparisons); the other arguments are then ignored.
    """
    return httpx.AsyncClient(
        transport=transport
        or AiohttpTransport(policy=policy, ssl_context=ssl_context, keepalive=keepalive),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        headers={"User-Agent": USER_AGENT},
        # Per-request timeouts are set from each check; this is only a backstop.
        timeout=httpx.Timeout(30.0),
    )


async def probe(client: httpx.AsyncClient, target: ProbeTarget) -> ProbeResult:
    """Probe one target. Never raises: a hostile or broken endpoint is a `down` outcome."""
    started = time.perf_counter()

    def finish(
        status: str, http_status: int | None = None, reason: str | None = None, detail: str = ""
    ) -> ProbeResult:
        return ProbeResult(
            check_id=target.check_id,
            slot=target.slot,
            observed_at=utcnow(),
            status=status,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            http_status=http_status,
            reason=reason,
            detail=detail[:500] or None,
        )

    http_status: int | None = None
    # Cookies and the redirect-body limit live for this probe only (a task of its own, or
    # reset below when awaited inline).
    scope = probe_scope.set(ProbeScope(target.max_body_bytes))
    try:
        # One deadline for the whole exchange: httpx's timeouts are per read, so a server
        # that drips a byte a second would otherwise hold the probe forever.
        async with asyncio.timeout(target.timeout_s):
            request_timeout = httpx.Timeout(target.timeout_s)
            url, auth = _parsed_url(target.url)
            async with client.stream(
                target.method, url, timeout=request_timeout, auth=auth
            ) as reply:
                http_status = reply.status_code
                received = 0
                async for chunk in reply.aiter_raw():
                    received += len(chunk)
                    if received > target.max_body_bytes:
                        return finish(
                            "down",
                            http_status,
                            Reason.BODY_TOO_LARGE,
                            f"body over {target.max_body_bytes} bytes",
                        )
        if http_status not in target.expected_status:
            return finish("down", http_status, Reason.BAD_STATUS, f"HTTP {http_status}")
        return finish("up", http_status)
    except TimeoutError:
        return finish("down", http_status, Reason.TIMEOUT, f"no answer within {target.timeout_s}s")
    except BlockedAddress as error:
        return finish("down", None, Reason.BLOCKED_ADDRESS, str(error))
    except BodyTooLarge as error:
        return finish("down", None, Reason.BODY_TOO_LARGE, str(error))
    except httpx.TimeoutException:
        return finish("down", http_status, Reason.TIMEOUT, f"no answer within {target.timeout_s}s")
    except httpx.TooManyRedirects:
        return finish(
            "down", http_status, Reason.TOO_MANY_REDIRECTS, f"more than {MAX_REDIRECTS} redirects"
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
        return finish("down", None, Reason.INVALID_URL, type(error).__name__)
    except httpx.TransportError as error:
        reason, detail = classify_transport_error(error)
        return finish("down", http_status, reason, detail)
    except Exception as error:  # a probe must never take the batch down with it
        return finish("down", http_status, Reason.PROBE_ERROR, type(error).__name__)
    finally:
        probe_scope.reset(scope)


@functools.lru_cache(maxsize=16_384)
def _parsed_url(url: str) -> tuple[httpx.URL, httpx.BasicAuth | None]:
    """A check's URL parsed once per process: httpx parses a str on every request, and its
    host check (an ipaddress parse) was 7 % of a probe's CPU (bench P1). About 0.5 KB an
    entry, so at most ~9 MB. Not cached when it raises, so a bad URL is still an
    `invalid_url` outcome every time.

    Credentials in it (`https://user:password@host/path`) come out as Basic auth, as curl
    and blackbox_exporter send them: the URL httpx gets has none, so no request log line or
    error text can show them, and httpx sends the header to the check's own origin only (a
    redirect to another host goes without it, as curl without --location-trusted)."""
    parsed = httpx.URL(url)
    if not parsed.userinfo:
        return parsed, None
    # The bytes the percent-encoding names, as curl sends them: httpx's username and password
    # decode them as UTF-8, and a Latin-1 `p%E4ss` became U+FFFD, a password nobody set.
    username, _, password = parsed.userinfo.partition(b":")
    auth = httpx.BasicAuth(unquote_to_bytes(username), unquote_to_bytes(password))
    return parsed.copy_with(userinfo=b""), auth


def classify_transport_error(error: BaseException) -> tuple[str, str]:
    """Name a connection failure by the lowest-level cause httpx wrapped."""
    tls_failed = False
    for cause in _causes(error):
        # aiohttp's connector errors are ssl errors themselves (ClientConnectorCertificateError
        # is an ssl.CertificateError) without ssl's details: the one beneath has them.
        if isinstance(cause, ssl.SSLCertVerificationError):
            tls_failed = True
            if getattr(cause, "verify_message", None):
                return Reason.TLS, cause.verify_message
            continue
        if isinstance(cause, ssl.SSLError):
            tls_failed = True
            if getattr(cause, "reason", None):
                return Reason.TLS, cause.reason
            continue
        if isinstance(cause, socket.gaierror):
            return Reason.DNS, "host name does not resolve"
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return Reason.REFUSED, "connection refused"
    if tls_failed:
        return Reason.TLS, "TLS handshake failed"
    # Before the text checks below: a protocol error's message quotes the peer's bytes
    # ("illegal status line: ..."), so a server must not pick its own reason by sending
    # words like "SSL" or "refused".
    if isinstance(error, httpx.RemoteProtocolError | httpx.LocalProtocolError):
        return Reason.PROTOCOL, str(error)[:200] or type(error).__name__
    text = str(error).lower()
    if "certificate" in text or "ssl" in text or "tls" in text:
        return Reason.TLS, str(error)[:200]
    if "refused" in text:
        return Reason.REFUSED, "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text:
        return Reason.DNS, "host name does not resolve"
    return Reason.CONNECTION, str(error)[:200] or type(error).__name__


def _causes(error: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


async def probe_all(
    client: httpx.AsyncClient, targets: Sequence[ProbeTarget], concurrency: int = 100
) -> list[ProbeResult]:
    """Probe every target, at most `concurrency` at a time, results in target order."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded(target: ProbeTarget) -> ProbeResult:
        async with gate:
            return await probe(client, target)

    return list(await asyncio.gather(*(bounded(t) for t in targets)))
