"""The probes' HTTP transport alone: probes per second and CPU per probe, in one process.

    .venv/bin/python -m bench.transport_bench [--rounds 20] [--repeats 3]

Starts nginx on loopback (bench/harness.Nginx: a keep-alive port, and a port that closes
every connection after one response) and runs `core.probing.probe_all` over 100 concurrent
probes x --rounds, through the real client (`make_client`, the SSRF guard on with loopback
allow-listed, as workers run it), for each transport:

- `freelist`: httpcore's HTTP/1.1 in a free list per origin (core/probe_transport.py), the
  transport before aiohttp;
- `aiohttp`: aiohttp under httpx's API (core/aiohttp_transport.py);

each with keep-alive (the keep-alive port) and with a new connection per probe (the client
asks for one, and nginx closes after each response, as blackbox_exporter's probes go).
Every configuration runs once per repeat, interleaved, so the machine's load drifts alike
for all; the table gives each one's median and the aiohttp/freelist ratio within each repeat.
CPU is this process's (user + system), so it counts the event loop and the resolver threads.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench import harness
from core.netguard import AddressPolicy, GuardedBackend
from core.probe_transport import FreeListTransport
from core.probing import ProbeTarget, make_client, probe_all

CONCURRENCY = 100
POLICY = AddressPolicy.from_allow_list(["127.0.0.0/8"])


def freelist_client(keepalive: bool) -> httpx.AsyncClient:
    return make_client(
        transport=FreeListTransport(network_backend=GuardedBackend(POLICY), keepalive=keepalive)
    )


def aiohttp_client(keepalive: bool) -> httpx.AsyncClient:
    return make_client(policy=POLICY, keepalive=keepalive)


TRANSPORTS: dict[str, Callable[[bool], httpx.AsyncClient]] = {
    "freelist": freelist_client,
    "aiohttp": aiohttp_client,
}


@dataclass(frozen=True)
class Measurement:
    probes: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.probes / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.probes


def targets(url: str, count: int) -> list[ProbeTarget]:
    slot = datetime.now(UTC)
    return [
        ProbeTarget(
            check_id=i,
            slot=slot,
            url=url,
            method="GET",
            timeout_s=10.0,
            expected_status=(200,),
            max_body_bytes=65_536,
        )
        for i in range(count)
    ]


def measure(
    make: Callable[[bool], httpx.AsyncClient], keepalive: bool, url: str, rounds: int
) -> Measurement:
    async def run() -> Measurement:
        async with make(keepalive) as client:
            # Warm up: the session, the connections (keep-alive), the URL caches.
            await probe_all(client, targets(url, CONCURRENCY), concurrency=CONCURRENCY)
            batch = targets(url, CONCURRENCY * rounds)
            cpu, wall = time.process_time(), time.perf_counter()
            results = await probe_all(client, batch, concurrency=CONCURRENCY)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        failed = [r for r in results if not r.ok]
        if failed:
            raise SystemExit(f"{len(failed)} probes failed, e.g. {failed[0]}")
        return Measurement(len(results), wall, cpu)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds of 100 concurrent probes")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every configuration")
    args = parser.parse_args()

    print(harness.machine())
    modes = {"keep-alive": True, "new connection each": False}
    results: dict[tuple[str, str], list[Measurement]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="eventops-transport-bench-") as workdir,
        harness.Nginx(Path(workdir)) as nginx,
    ):
        for repeat in range(args.repeats):
            for mode, keepalive in modes.items():
                for name, make in TRANSPORTS.items():
                    found = measure(make, keepalive, nginx.url(keepalive), args.rounds)
                    results.setdefault((name, mode), []).append(found)
                    print(
                        f"  repeat {repeat + 1}: {name:9} {mode:20} {found.rate:7.0f}/s "
                        f"{found.cpu_ms:5.2f} ms CPU/probe  (load {harness.load()})",
                        flush=True,
                    )

    print(f"\n{CONCURRENCY} concurrent x {args.rounds} rounds, {args.repeats} repeats (median)\n")
    print("| transport | mode | probes/s | CPU ms / probe | rate vs freelist, each repeat |")
    print("|---|---|---|---|---|")
    for mode in modes:
        for name in TRANSPORTS:
            runs = results[(name, mode)]
            baseline = results[("freelist", mode)]
            ratios = ", ".join(
                f"x{r.rate / b.rate:.2f}" for r, b in zip(runs, baseline, strict=True)
            )
            print(
                f"| {name} | {mode} | {statistics.median(r.rate for r in runs):.0f} "
                f"| {statistics.median(r.cpu_ms for r in runs):.2f} | {ratios} |"
            )


if __name__ == "__main__":
    main()
