"""The SSRF guard against real servers on loopback: internal addresses need an allow-list entry.

Every test serves real HTTP on 127.0.0.x and counts the requests that arrive: a refused probe
must not have reached the server at all, not merely have been reported down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from core.netguard import AddressPolicy, BlockedAddress, GuardedResolver, is_internal
from core.probing import ProbeResult, ProbeTarget, Reason, make_client, probe
from models.config import ConfigError
from tests.conftest import make_config

pytestmark = pytest.mark.timeout(30)


class CountingServer:
    """HTTP on `host`: answers 200, or a redirect to `redirect_to`; counts what arrives."""

    def __init__(self, host: str = "127.0.0.1", redirect_to: str | None = None) -> None:
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        server_class = ThreadingHTTPServer
        if ":" in host:

            class IPv6Server(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = IPv6Server
        self.httpd = server_class((host, 0), Handler)
        literal = f"[{host}]" if ":" in host else host
        self.url = f"http://{literal}:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[CountingServer]:
    target = CountingServer()
    yield target
    target.close()


def probe_with(policy: AddressPolicy, url: str) -> ProbeResult:
    async def go() -> ProbeResult:
        async with make_client(policy=policy) as client:
            target = ProbeTarget(
                check_id=1,
                slot=datetime(2026, 11, 27, tzinfo=UTC),
                url=url,
                method="GET",
                timeout_s=3.0,
                expected_status=tuple(range(200, 300)),
                max_body_bytes=1024,
            )
            return await probe(client, target)

    return asyncio.run(go())


def test_probe_to_loopback_without_an_allow_list_entry_is_refused_before_connecting(
    server: CountingServer,
) -> None:
    result = probe_with(AddressPolicy(), server.url)
    assert (result.status, result.reason) == ("down", Reason.BLOCKED_ADDRESS)
    assert "127.0.0.1" in (result.detail or "") and "allow_internal" in (result.detail or "")
    assert server.hits == 0


def test_allow_listed_network_is_probed(server: CountingServer) -> None:
    result = probe_with(AddressPolicy.from_allow_list(["127.0.0.0/8"]), server.url)
    assert (result.status, result.http_status) == ("up", 200)
    assert server.hits == 1


def test_host_name_that_resolves_to_loopback_is_refused_unless_the_name_is_listed(
    server: CountingServer,
) -> None:
    by_name = server.url.replace("127.0.0.1", "localhost")
    refused = probe_with(AddressPolicy(), by_name)
    assert refused.reason == Reason.BLOCKED_ADDRESS
    assert server.hits == 0
    allowed = probe_with(AddressPolicy.from_allow_list(["localhost"]), by_name)
    assert allowed.status == "up"
    assert server.hits == 1


def test_redirect_from_an_allowed_host_to_an_internal_one_is_refused() -> None:
    internal = CountingServer(host="127.0.0.2")
    allowed = CountingServer(redirect_to=internal.url)
    try:
        result = probe_with(AddressPolicy.from_allow_list(["127.0.0.1"]), allowed.url)
        assert (result.status, result.reason) == ("down", Reason.BLOCKED_ADDRESS)
        assert "127.0.0.2" in (result.detail or "")
        assert (allowed.hits, internal.hits) == (1, 0)
    finally:
        internal.close()
        allowed.close()


def test_cloud_metadata_address_is_refused_even_with_loopback_allowed() -> None:
    result = probe_with(
        AddressPolicy.from_allow_list(["127.0.0.0/8"]), "http://169.254.169.254/latest/meta-data/"
    )
    assert (result.status, result.reason) == ("down", Reason.BLOCKED_ADDRESS)


def test_name_that_does_not_resolve_is_still_a_dns_failure() -> None:
    result = probe_with(AddressPolicy(), "http://no-such-host.invalid/")
    assert (result.status, result.reason) == ("down", Reason.DNS)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
     "0.0.0.0", "::1", "fc00::1", "fe80::1", "::ffff:127.0.0.1", "224.0.0.1"],
)  # fmt: skip
def test_every_non_public_address_counts_as_internal(address: str) -> None:
    assert is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_are_not_internal(address: str) -> None:
    assert not is_internal(ipaddress.ip_address(address))


def test_v4_mapped_loopback_is_allowed_by_the_v4_network() -> None:
    policy = AddressPolicy.from_allow_list(["127.0.0.0/8"])
    assert policy.allows("x", ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not policy.allows("x", ipaddress.ip_address("::ffff:10.0.0.1"))


def test_malformed_allow_list_entry_names_the_field() -> None:
    with pytest.raises(ConfigError) as error:
        make_config(network={"allow_internal": ["10.0.0.0/8", "not a host!"]})
    assert "network.allow_internal" in str(error.value)
    assert "not a host!" in str(error.value)


# ------------------------------------------------- the aiohttp transport's two ways in


class FixedAnswers(AbstractResolver):
    """A DNS that answers every name with these addresses (no traffic leaves loopback)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


def test_resolver_refuses_a_name_when_any_one_of_its_addresses_is_internal() -> None:
    policy = AddressPolicy.from_allow_list(["127.0.0.1/32"])

    async def resolve(*answers: str) -> list[ResolveResult]:
        return await GuardedResolver(policy, FixedAnswers(*answers)).resolve("multi.test", 80)

    assert [a["host"] for a in asyncio.run(resolve("127.0.0.1"))] == ["127.0.0.1"]
    # The allowed address first: the second one must still be looked at.
    with pytest.raises(BlockedAddress) as refused:
        asyncio.run(resolve("127.0.0.1", "127.0.0.2"))
    assert refused.value.address == "127.0.0.2"


def test_resolver_reports_a_name_that_does_not_resolve_as_the_gaierror() -> None:
    async def resolve() -> None:
        await GuardedResolver(AddressPolicy()).resolve("no-such-host.invalid", 80)

    with pytest.raises(socket.gaierror):
        asyncio.run(resolve())


def test_ipv6_loopback_literal_is_refused_before_connecting() -> None:
    # aiohttp never hands an IP literal to the resolver: the transport checks it itself.
    internal = CountingServer(host="::1")
    try:
        result = probe_with(AddressPolicy(), internal.url)
        assert (result.status, result.reason) == ("down", Reason.BLOCKED_ADDRESS)
        assert internal.hits == 0
        allowed = probe_with(AddressPolicy.from_allow_list(["::1"]), internal.url)
        assert allowed.status == "up"
        assert internal.hits == 1
    finally:
        internal.close()


@pytest.mark.parametrize("numeric_host", ["2130706433", "127.1", "0x7f000001"])
def test_legacy_numeric_form_of_loopback_never_reaches_the_server(
    server: CountingServer, numeric_host: str
) -> None:
    # socket maps each onto 127.0.0.1. The all-digit ones look like literals to aiohttp, so
    # they never meet the resolver: refused as invalid. The hex one is resolved as a name and
    # its answer checked. Neither way gets through without an allow-list entry.
    url = server.url.replace("127.0.0.1", numeric_host)
    result = probe_with(AddressPolicy(), url)
    assert result.status == "down"
    assert result.reason in {Reason.INVALID_URL, Reason.BLOCKED_ADDRESS}, result
    assert server.hits == 0


@pytest.mark.parametrize(
    "url", ["http+unix://%2Frun%2Feventops-test.sock/info", "unix:///run/eventops-test.sock"]
)
def test_unix_socket_urls_are_refused(url: str) -> None:
    # The transport speaks TCP only (aiohttp's TCPConnector): no scheme reaches a socket file.
    result = probe_with(AddressPolicy.from_allow_list(["127.0.0.0/8"]), url)
    assert (result.status, result.reason) == ("down", Reason.INVALID_URL)
