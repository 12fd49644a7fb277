"""httpcore's HTTP/1.1 connections, kept in a free list per origin: the probes' transport
before core/aiohttp_transport.py, kept as the baseline that bench/transport_bench.py measures
the aiohttp transport against (and as the httpcore-based fallback, with netguard's
GuardedBackend as its network backend).

Why not httpx's default transport: httpcore's connection pool rescans every connection for
every queued request each time a request starts or finishes, so a batch of 100 concurrent
probes costs O(n^2) (measured: about 7 ms of CPU per probe at 100 at once against a local
nginx; bench/RESULTS.md, P1). Here a request takes an idle connection of its origin or opens
a new one (O(1)), and gives it back when its response is closed. The wire protocol, the
timeouts and the exceptions are httpcore's and httpx's own, so probe reasons and the SSRF
guard (a network backend, checked on every connect) behave exactly as before.
"""

from __future__ import annotations

import ssl
from collections import defaultdict
from collections.abc import AsyncIterator

import httpcore
import httpx
from httpx._transports.default import map_httpcore_exceptions


class FreeListTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive (or one connection per request when `keepalive` is False)."""

    def __init__(
        self,
        *,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
        keepalive: bool = True,
        max_idle_per_origin: int = 200,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._backend = network_backend or httpcore.AnyIOBackend()
        self._ssl_context = ssl_context or httpx.create_ssl_context()
        self._keepalive = keepalive
        self._max_idle = max_idle_per_origin
        self._expiry = keepalive_expiry
        # Keyed by (scheme, host, port): httpcore's Origin is not hashable.
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore.AsyncHTTPConnection]] = (
            defaultdict(list)
        )

    async def _checkout(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        idle = self._idle.get(_key(origin))
        while idle:
            connection = idle.pop()
            # Expired, or closed by the server while it sat idle: drop it.
            if connection.is_available() and not connection.has_expired():
                return connection
            await connection.aclose()
        return httpcore.AsyncHTTPConnection(
            origin=origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._expiry,
            http1=True,
            http2=False,
            network_backend=self._backend,
        )

    async def _checkin(self, connection: httpcore.AsyncHTTPConnection) -> None:
        idle = self._idle[_key(connection._origin)]
        if self._keepalive and connection.is_idle() and len(idle) < self._max_idle:
            idle.append(connection)
        else:
            await connection.aclose()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        # As httpcore's pool does before it picks a connection.
        scheme = request.url.scheme
        if scheme == "":
            raise httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://'")
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{scheme}://'"
            )
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        connection = await self._checkout(core_request.url.origin)
        try:
            with map_httpcore_exceptions():
                response = await connection.handle_async_request(core_request)
        except BaseException:
            await connection.aclose()
            raise
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response, connection, self),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                await connection.aclose()
        self._idle.clear()


def _key(origin: httpcore.Origin) -> tuple[bytes, bytes, int]:
    return (origin.scheme, origin.host, origin.port)


class _ResponseStream(httpx.AsyncByteStream):
    """The body; closing it gives the connection back (or closes it if it is not reusable)."""

    def __init__(
        self,
        response: httpcore.Response,
        connection: httpcore.AsyncHTTPConnection,
        transport: FreeListTransport,
    ) -> None:
        self._response = response
        self._connection = connection
        self._transport = transport
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_httpcore_exceptions():
            async for part in self._response.aiter_stream():
                yield part

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with map_httpcore_exceptions():
                await self._response.aclose()
        finally:
            await self._transport._checkin(self._connection)
