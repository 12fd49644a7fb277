"""The probes' httpx transport: aiohttp does the HTTP/1.1 wire work, httpx stays the API.

Why: the probe's CPU was mostly httpcore's and httpx's own (bench/RESULTS.md, P1), and
aiohttp parses HTTP in C and keeps its connection pool in O(1) per request. Probe code is
unchanged: `client.stream(...)`, `reply.aiter_raw()`, httpx's redirects (every hop comes
back through this transport and the SSRF guard), httpx's exceptions.

What the transport promises (tests/integration/test_probe_reasons.py, test_ssrf_guard.py,
test_hostile_endpoints.py):

- The SSRF guard at connect time: host names go through `GuardedResolver` (every resolved
  address is checked; aiohttp connects only to what it returned), and IP-literal hosts are
  checked here, because aiohttp never asks a resolver about a literal. aiohttp's TCP
  connector cannot reach a unix socket at all.
- aiohttp's exceptions come out as httpx's (ConnectError, ConnectTimeout, ReadTimeout,
  RemoteProtocolError, ReadError), with aiohttp's as `__cause__`, so
  `core.probing.classify_transport_error` finds the ssl, DNS or refused error beneath.
- aiohttp neither follows redirects (httpx does) nor decompresses: the body is the bytes
  after de-chunking and before content decoding, what httpx's `aiter_raw()` gives, so
  `max_body_bytes` counts the body as sent, compressed or not.
- Cookies and redirect bodies belong to one probe (`ProbeScope`, set by
  `core.probing.probe`): a jar per probe, as blackbox_exporter keeps, filled only from the
  redirects httpx follows and only with as many cookies as a browser must keep; a redirect's
  body is read raw, held to the probe's `max_body_bytes` and dropped, never decoded (httpx
  would read it whole and decompress it on the event loop: a 300 KB gzip bomb is 300 MB).
- Credentials never go in the URL aiohttp sees: a check's own travel as the Authorization
  header httpx makes (core.probing passes them as `auth`, to the check's origin only).
- No probe holds the event loop that every probe of the batch shares, whatever its server
  sends: a body is read a piece at a time with the loop handed back every millisecond, at
  most 16 informational (1xx) answers are skipped, cookies are parsed from followed
  redirects only and within a browser's limits, and nothing is decompressed.
- No connection limit (a batch's 100 to 500 concurrent probes never queue for a slot);
  keep-alive by default, `keepalive=False` for a new connection per request.
- aiohttp's session belongs to an event loop, so it is made on the first request, in the
  loop that runs it (workers/runtime.py builds the client before its loop runs; a prefork
  child builds its own client, workers/runtime.reset).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

import aiohttp
import httpx
from aiohttp import hdrs
from aiohttp.connector import Connection
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import StreamReader
from multidict import CIMultiDict
from yarl import URL

from core.netguard import AddressPolicy, GuardedResolver


@dataclass
class ProbeScope:
    """What lives for one probe only, set by `core.probing.probe` around its exchange.

    - Cookies: a jar per probe, as blackbox_exporter keeps one: a redirect chain that sets a
      cookie and expects it back works, and no probe is sent what a site gave an earlier
      one (httpx's client would keep them for the process, so a check would stop seeing
      what a new visitor sees, and the jar would grow with every site that sets one).
    - Redirect bodies: httpx reads a redirect's body whole and decodes it before following
      (a compression bomb inflates on the event loop, where no deadline can stop it). In a
      probe nobody looks at that body: it is read raw, held to `max_body_bytes`, and
      dropped, so httpx has nothing to decode.
    """

    max_body_bytes: int
    cookies: httpx.Cookies = field(default_factory=httpx.Cookies)


probe_scope: ContextVar[ProbeScope | None] = ContextVar("probe_scope", default=None)

_FOLLOWED = frozenset({301, 302, 303, 307, 308})
# How long reading a body keeps the event loop before the other probes get a turn.
_TURN_S = 0.001
# Informational (1xx) answers skipped before the final one; real servers send one or two.
_MAX_INFORMATIONAL = 16
# HTTP chunks a body may come in: 1,024, and one more per 256 bytes. Each costs about 2 us of
# parsing on the event loop, however small: a body in one-byte chunks kept its probe parsing
# until its deadline (a 1 MB limit is a million chunks), every turn of the loop as long as all
# such probes' turns, so with 40 of them a batch's other probes timed out. Servers send
# kilobytes a chunk; a body that passes costs at most about 8 ms of parsing per MB.
_FREE_HTTP_CHUNKS = 1024
_BYTES_PER_HTTP_CHUNK = 256


class BodyTooLarge(Exception):
    """A redirect answered with a body over the probe's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"redirect body over {limit} bytes")
        self.limit = limit


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over one aiohttp session, made lazily in the loop that sends the requests."""

    def __init__(
        self,
        *,
        policy: AddressPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        keepalive: bool = True,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._policy = policy
        self._allowed_literals: set[str] = set()
        self._ssl_context = ssl_context or httpx.create_ssl_context()
        self._keepalive = keepalive
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def _session_of_this_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._session_loop is loop:
            return self._session
        # First request, or a new loop: a session cannot move between loops, and the old
        # loop's connections went with it.
        self._let_go_of_session()
        resolver = GuardedResolver(self._policy) if self._policy is not None else None
        # limit=0: no cap on connections, so a batch's probes never queue for a slot.
        if self._keepalive:
            connector = aiohttp.TCPConnector(
                limit=0,
                ssl=self._ssl_context,
                resolver=resolver,
                keepalive_timeout=self._keepalive_expiry,
            )
        else:  # aiohttp refuses a keepalive_timeout together with force_close
            connector = aiohttp.TCPConnector(
                limit=0, ssl=self._ssl_context, resolver=resolver, force_close=True
            )
        session = aiohttp.ClientSession(
            connector=connector,
            # Per-request timeouts come from httpx; the probe's overall deadline is its own.
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            trust_env=False,
            # Cookies live in the probe's own jar (ProbeScope); one here would keep them for
            # the session's life. From aiohttp 3.14.4 (pyproject's pin) this one parses
            # nothing; before, the session parsed every answer's Set-Cookie headers for it.
            cookie_jar=aiohttp.DummyCookieJar(),
            response_class=_ProbeResponse,
        )
        # aiohttp resends an idempotent request once on a new connection after the server
        # closed or reset the first, even when that was a fresh connection: a broken
        # server would get two requests per probe and a flapping one would look healthy.
        # httpcore never retried either.
        session._retry_connection = False
        self._session, self._session_loop = session, loop
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{url.scheme}://'"
                if url.scheme
                else "Request URL is missing an 'http://' or 'https://'"
            )
        if self._policy is not None and url.host not in self._allowed_literals:
            literal = _ip_literal(url.host)
            if literal is not None:
                self._policy.check(url.host, (literal,))
                # The policy never changes: a literal that passed once passes (3 % of a
                # probe's CPU in the worker, bench P1). A refused one is checked every time;
                # redirects can name any address, so the memo is bounded.
                if len(self._allowed_literals) >= 4096:
                    self._allowed_literals.clear()
                self._allowed_literals.add(url.host)
        scope = probe_scope.get()
        if scope is not None and scope.cookies:
            scope.cookies.set_cookie_header(request)
        headers = CIMultiDict(request.headers.multi_items())
        if not self._keepalive:
            # httpx asks for keep-alive by default; aiohttp says `close` when it is unset.
            headers.popall("Connection", None)
        if url.userinfo:
            # Credentials travel only as the Authorization header httpx made of the check's
            # own (core.probing); a redirect's Location may name others, which are not sent
            # (aiohttp would send them, or refuse them next to the header).
            url = url.copy_with(userinfo=b"")
        body = await request.aread()
        try:
            response = await self._session_of_this_loop().request(
                request.method,
                _yarl_url(str(url)),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=_client_timeout(request.extensions.get("timeout", {})),
                server_hostname=request.extensions.get("sni_hostname"),
            )
        except (aiohttp.ClientError, OSError) as error:
            raise _as_httpx_error(error) from error
        raw_headers = response.raw_headers
        # The statuses httpx follows (a 300 or 304 is a final answer, held to the probe's own
        # limit with its status).
        redirect = response.status in _FOLLOWED and hdrs.LOCATION in response.headers
        if hdrs.SET_COOKIE in response.headers:
            # Into this probe's jar (or nowhere, outside a probe); httpx's own jar, which
            # lives as long as the client, never sees them. Only a followed redirect's
            # cookies can be sent again within the probe, so the final answer's are not
            # parsed at all.
            if scope is not None and redirect:
                scope.cookies.extract_cookies(
                    httpx.Response(
                        response.status, headers=_cookies_to_keep(raw_headers), request=request
                    )
                )
            raw_headers = tuple(
                (name, value) for name, value in raw_headers if name.lower() != b"set-cookie"
            )
        if scope is not None and redirect:
            stream: httpx.AsyncByteStream = _DroppedBody(response, scope.max_body_bytes)
        else:
            stream = _ResponseBody(response)
        return httpx.Response(status_code=response.status, headers=raw_headers, stream=stream)

    def _let_go_of_session(self) -> None:
        """Drop the session of another (usually closed) loop: nothing can be awaited there,
        so its pool is closed without it, and aiohttp does not log an unclosed session or
        connector at ERROR when they are collected."""
        stale, self._session = self._session, None
        if stale is not None:
            if stale.connector is not None:
                stale.connector._close()
            stale.detach()

    async def aclose(self) -> None:
        if self._session is not None and self._session_loop is asyncio.get_running_loop():
            session, self._session = self._session, None
            await session.close()
        else:
            self._let_go_of_session()


class _ResponseBody(httpx.AsyncByteStream):
    """The body as it arrives; closing it returns the connection to the pool when the body
    was read to the end, and closes it otherwise (aiohttp decides, per connection).

    Read a piece (an HTTP chunk, or what one socket read brought) at a time, and the event
    loop handed back every `_TURN_S`: aiohttp returns buffered data without letting the loop
    run, and reading it lets aiohttp parse more of what the socket brought, so a body sent
    in one-byte chunks (`readany()` takes every buffered one at once) held the loop 30 to
    70 ms per socket read until the deadline, every other probe of the batch waiting. A body
    in more HTTP chunks than its size warrants (`_FREE_HTTP_CHUNKS`) is a protocol error:
    turns alone left such a probe parsing until its deadline.
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        turn_ends = loop.time() + _TURN_S
        received = http_chunks = 0
        try:
            async for chunk, end_of_http_chunk in self._response.content.iter_chunks():
                if chunk:
                    received += len(chunk)
                    yield chunk
                if end_of_http_chunk:
                    http_chunks += 1
                    if http_chunks > _FREE_HTTP_CHUNKS + received // _BYTES_PER_HTTP_CHUNK:
                        # Closing the response (the caller's aclose) closes the connection.
                        raise httpx.RemoteProtocolError(
                            f"body in {http_chunks} HTTP chunks of {received} bytes"
                        )
                if loop.time() >= turn_ends:
                    await asyncio.sleep(0)
                    turn_ends = loop.time() + _TURN_S
        except (aiohttp.ClientError, OSError) as error:
            raise _as_httpx_error(error) from error

    async def aclose(self) -> None:
        self._response.release()


class _DroppedBody(_ResponseBody):
    """A followed redirect's body in a probe: read as sent (so the connection can serve the
    next hop), held to the probe's limit, and dropped. httpx gets no bytes, so whatever its
    Content-Encoding claims, nothing is decompressed."""

    def __init__(self, response: aiohttp.ClientResponse, limit: int) -> None:
        super().__init__(response)
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in super().__aiter__():
            received += len(chunk)
            if received > self._limit:
                raise BodyTooLarge(self._limit)
        return
        yield  # an async generator that yields nothing


class _ProbeResponse(aiohttp.ClientResponse):
    """aiohttp's response with its informational (1xx) answers counted: aiohttp skips any
    number of them, each parsed into a message and dropped on the event loop, so a server
    sending `100 Continue` without end held the loop about 0.1 s per socket read until the
    deadline. Past `_MAX_INFORMATIONAL` the answer is a protocol error."""

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        protocol = connection.protocol
        if protocol is None:  # the connection is already closed: aiohttp says so
            return await super().start(connection)
        read = protocol.read
        answers = 0

        async def counted_read() -> tuple[RawResponseMessage, StreamReader]:
            nonlocal answers
            answers += 1
            if answers > _MAX_INFORMATIONAL + 1:
                # start() reports it as aiohttp's own protocol errors (ClientResponseError).
                raise HttpProcessingError(
                    message=f"more than {_MAX_INFORMATIONAL} informational (1xx) responses"
                )
            return await read()

        # start() reads each answer through the protocol's read(); the protocol belongs to
        # this request's connection until start() returns.
        protocol.read = counted_read  # type: ignore[method-assign]
        try:
            return await super().start(connection)
        finally:
            del protocol.read


# RFC 6265 (6.1) asks a user agent to keep at least 50 cookies of 4096 bytes per domain; a
# real cookie has a handful of attributes. Parsing is pure Python on the event loop (128
# Set-Cookie headers of 8 KB took 150 ms per response, every other probe waiting), so a
# probe keeps that much and ignores the rest, as a browser past its limits does.
_MAX_COOKIES = 50
_MAX_COOKIE_BYTES = 4096
_MAX_COOKIE_ATTRIBUTES = 16


def _cookies_to_keep(raw_headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept: list[tuple[bytes, bytes]] = []
    for name, value in raw_headers:
        if (
            name.lower() == b"set-cookie"
            and len(value) <= _MAX_COOKIE_BYTES
            and value.count(b";") <= _MAX_COOKIE_ATTRIBUTES
        ):
            kept.append((name, value))
            if len(kept) == _MAX_COOKIES:
                break
    return kept


def _as_httpx_error(error: BaseException) -> Exception:
    """The httpx exception that httpcore would have raised for the same failure."""
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(error))
    if isinstance(error, TimeoutError):  # aiohttp's ServerTimeoutError is one
        return httpx.ReadTimeout(str(error) or "read timed out")
    if isinstance(error, aiohttp.ClientConnectorError):
        # DNS, refused, TLS: classify_transport_error names it from the cause chain.
        return httpx.ConnectError(str(error))
    if isinstance(error, aiohttp.ClientResponseError):
        # The HTTP parser's error (a garbage status line, bad headers): its description
        # only (the reason never comes from it: classify_transport_error checks the type).
        return httpx.RemoteProtocolError(_described(error.message) or "invalid HTTP response")
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError("Server disconnected without sending a response.")
    if isinstance(error, aiohttp.ClientPayloadError):
        cause = error.__cause__
        what = _described(cause.message) if isinstance(cause, HttpProcessingError) else ""
        return httpx.RemoteProtocolError(
            f"peer closed connection without sending complete message body: {what or 'cut short'}"
        )
    if isinstance(error, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.InvalidURL(type(error).__name__)
    # A reset or another socket error on an established connection.
    return httpx.ReadError(str(error) or type(error).__name__)


# Where aiohttp's description of a parse error ends and its quote of the peer's bytes begins
# (`Bad status line:\n\n  b'...'`, `Got more than 8190 bytes when reading: b'...'.`).
_PEER_BYTES = re.compile(r"""(?::\s*)?\n|:?\s+b?['"]""")


def _described(message: str) -> str:
    """aiohttp's words for a parse error without the bytes it quotes: those can be the probe's
    own request sent back (an echo service, a debugging endpoint), whose request line holds the
    check URL's path and query (`?token=`), and the detail goes to the outcome, the incident
    and its notifications."""
    return " ".join(_PEER_BYTES.split(message, maxsplit=1)[0].split())


@functools.lru_cache(maxsize=4096)
def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address when `host` is an IP literal, which aiohttp connects to without asking
    the resolver; None for a name. Raises httpx.InvalidURL for a host that aiohttp would
    take for a literal but is not a canonical one (`127.1`, `2130706433`): aiohttp refuses
    those too, and the guard must not depend on that."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        # aiohttp's own test for "looks like an IP address" (helpers.is_ip_address).
        if ":" in host or host.replace(".", "").isdigit():
            raise httpx.InvalidURL(f"{host!r} is not a canonical IP address") from None
        return None


def _yarl_url(url: str) -> URL:
    """httpx's URL is already parsed and percent-encoded: yarl takes it as it is, once for a
    URL of ordinary length. A redirect can name 8 KB of URL, a new one every time: 16,384
    of those remembered would hold over 300 MB (20 KB an entry, URL and yarl's parse)."""
    if len(url) > _REMEMBERED_URL_CHARS:
        return URL(url, encoded=True)
    return _remembered_yarl_url(url)


_REMEMBERED_URL_CHARS = 512


@functools.lru_cache(maxsize=16_384)
def _remembered_yarl_url(url: str) -> URL:
    return URL(url, encoded=True)


@functools.lru_cache(maxsize=64)
def _client_timeout_cached(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


def _client_timeout(timeouts: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's per-request connect and read timeouts (a connect includes the TLS handshake)."""
    return _client_timeout_cached(timeouts.get("connect"), timeouts.get("read"))
