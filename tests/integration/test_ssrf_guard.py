"""The SSRF guard against real servers on loopback: internal addresses need an allow-list entry.

Every test serves real HTTP on 127.0.0.x and counts the requests that arrive: a refused probe
must not have reached the server at all, not merely have been reported down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.netguard import AddressPolicy, is_internal
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

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}/"
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
