"""The SSRF guard: probes reach public addresses, and internal ones only when allow-listed.

A config change (a new check URL, a new platform URL, a redirect the target answers with)
must not turn the probes against the network eventops runs in: the cloud metadata service at
169.254.169.254, Redis, Postgres, an admin port on localhost. Healthchecks guards its
webhooks the same way.

The check happens where the connection is made, not on the URL: the host name is resolved
once, every address it resolves to is checked, and the connection goes to the checked
address. So a DNS answer that changes between a check and the connect (DNS rebinding), a
name that points at 127.0.0.1, and every redirect hop (each opens its own connection) all
meet the same rule.

Two ways in, one rule: `GuardedResolver` for the probes' aiohttp transport
(core/aiohttp_transport.py, which also checks IP-literal hosts itself, since aiohttp never
asks a resolver about those), and `GuardedBackend` for an httpcore network backend.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpcore
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from httpcore._backends.auto import AutoBackend

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedAddress(Exception):
    """A probe tried to reach an internal address that is not allow-listed."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(
            f"{host} resolves to internal address {address}, which is not allow-listed "
            "(network.allow_internal)"
        )
        self.host = host
        self.address = address


def is_internal(address: IPAddress) -> bool:
    """Everything that is not a globally routable unicast address counts as internal."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


@dataclass(frozen=True)
class AddressPolicy:
    """Which internal addresses probes may reach: allow-listed networks and host names."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_allow_list(cls, entries: Iterable[str]) -> AddressPolicy:
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows(self, host: str, address: IPAddress) -> bool:
        if not is_internal(address):
            return True
        if host.lower().rstrip(".") in self.hosts:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Raise BlockedAddress unless every address passes.

        All of them, not the first: a name that answers with one public and one private
        address must not get through on the public one and connect to the private one.
        """
        for address in addresses:
            if not self.allows(host, address):
                raise BlockedAddress(host, str(address))


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver (getaddrinfo in a thread) with every answer checked against the policy.

    aiohttp connects only to the addresses a resolver returns, so the connection goes to
    what was checked. Its DNS cache (10 s) holds only answers that passed, and a refusal
    reaches the probe as BlockedAddress itself (aiohttp wraps only OSError as a DNS error).
    Build it inside the running loop, as aiohttp's TCPConnector must be.
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        self.policy.check(host, (ipaddress.ip_address(answer["host"]) for answer in answers))
        return answers

    async def close(self) -> None:
        await self._inner.close()


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with every TCP connect checked against the policy."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = AutoBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self.checked_address(host, port)
        return await self._inner.connect_tcp(
            address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def checked_address(self, host: str, port: int) -> str:
        """The address to connect to, after every address the name resolves to passed."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except socket.gaierror as error:
            # The probe names this `dns`, as it would without the guard.
            raise httpcore.ConnectError(str(error)) from error
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        self.policy.check(host, addresses)
        return str(addresses[0])

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress(path, "unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
