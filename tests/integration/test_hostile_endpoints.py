"""Hostile endpoints against the probes: each probe ends by its own deadline with its reason,
alone or in a batch, and nothing a server sends is inflated in the worker's memory.

The servers are the zoo in tests/hostile_servers.py: real sockets on loopback, one way of
misbehaving each. Time is the real clock here on purpose: what is under test is that a
probe ends when its deadline says, whatever the server sends.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from core.netguard import AddressPolicy
from core.probing import ProbeResult, Reason, make_client, probe, probe_all
from tests.hostile_servers import (
    INFLATED,
    ZOO,
    Hostile,
    RawServer,
    ServerProcess,
    assert_down,
    bomb,
    compressed_answer,
    healthy_after,
    new_long_redirects,
    routes,
    run_probe,
    target,
    timed_probe,
    tiny_chunks,
)

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")

# How late past its own deadline a probe may end: scheduling on a loaded two-core machine,
# not work the probe does. Decoding one of the zoo's bombs on the event loop takes longer.
LATE_S = 0.25

# The longest a probe may hold the event loop at once, in CPU time (about 10 ms at worst
# now). Before the fixes: inflating a bomb 240 to 360 ms, 120 cookies of 8 KB 180 ms, a
# socket read of `100 Continue` answers 90 ms, of one-byte chunks 30 to 40 ms.
STALL_S = 0.025

# What a probe may hold at its peak: the bombs are 128 MB and more once inflated, and their
# bytes on the wire at most a few hundred KB.
PEAK_BYTES = 8 * 1_048_576


def traced_peak(work: Callable[[], T]) -> tuple[T, int]:
    """`work`'s result and the most memory Python held at once while it ran (tracemalloc sees
    every bytes object, zlib's output included)."""
    tracemalloc.start()
    try:
        result = work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


async def longest_stall(work: Awaitable[T]) -> tuple[T, float, float]:
    """`work`'s result, the longest the event loop was held while it ran, and how long it
    took. A ticker wakes every 2 ms, and the most CPU time the loop's thread spent between two
    of its wake-ups is work that nothing else on the loop could interleave with. CPU time, not
    the clock, so a loaded machine taking the processor away does not count; nor does the
    garbage collector (off meanwhile), whose pauses are the test process's, not the probe's.
    The duration starts after the collection before it (60 to 90 ms in a pytest process, a
    third of the margin a probe is allowed past its deadline)."""
    longest = last = 0.0

    async def tick() -> None:
        nonlocal longest, last
        while True:
            await asyncio.sleep(0.002)
            now = time.thread_time()
            longest, last = max(longest, now - last), now

    gc.collect()
    gc.disable()
    ticker = asyncio.create_task(tick())
    started, last = time.perf_counter(), time.thread_time()
    try:
        result = await work
        # And the stretch since the ticker's last turn: a probe's last step (parsing the
        # final answer, say) has no tick after it.
        longest = max(longest, time.thread_time() - last)
        return result, longest, time.perf_counter() - started
    finally:
        ticker.cancel()
        gc.enable()


def expected_outcome(kind: Hostile) -> tuple[str, str | None]:
    return ("up", None) if kind.reason is None else ("down", kind.reason)


# --------------------------------------------------------------------------- one at a time


@pytest.mark.parametrize("kind", ZOO, ids=[kind.name for kind in ZOO])
def test_each_hostile_server_gets_its_outcome_by_the_deadline_without_holding_the_event_loop(
    serve_apart: Callable[..., ServerProcess], kind: Hostile
) -> None:
    # The event loop is every probe's: work that holds it (inflating, parsing a flood of
    # cookies or chunks or 1xx answers) makes the whole batch late (see the batch test).
    server = serve_apart(kind.handler())
    probe_target = target(
        server.url("/", kind.scheme), timeout_s=1.0, max_body_bytes=kind.max_body_bytes
    )

    async def one() -> tuple[ProbeResult, float, float]:
        async with make_client() as client:
            return await longest_stall(probe(client, probe_target))

    result, stall, elapsed = asyncio.run(one())

    assert (result.status, result.reason) == expected_outcome(kind), result
    assert elapsed <= 1.0 + LATE_S
    assert stall < STALL_S, f"the event loop was held for {stall:.3f} s"


# --------------------------------------------------------------------------- compressed redirects

REDIRECT_BOMBS = [
    ("302 Found", "gzip"),
    ("301 Moved Permanently", "deflate"),
    ("303 See Other", "gzip"),
    ("307 Temporary Redirect", "gzip, gzip"),
    ("308 Permanent Redirect", "deflate, gzip"),
]


@pytest.mark.parametrize(("status", "encoding"), REDIRECT_BOMBS)
def test_a_compression_bomb_on_a_redirect_is_followed_without_being_decompressed(
    serve: Callable[..., RawServer], status: str, encoding: str
) -> None:
    # httpx reads a redirect's body and decodes it before following: 128 MB here, from a
    # body of 130 KB (a single KB when stacked), well inside the probe's limit on the wire.
    server = serve(compressed_answer(status, encoding, bomb(encoding, INFLATED)))

    result, peak = traced_peak(lambda: run_probe(target(server.url("/"))))

    assert (result.status, result.http_status) == ("up", 200), result
    assert peak < PEAK_BYTES, f"{peak / 1_048_576:.0f} MB held: the bomb was inflated"


def test_a_gzip_bomb_on_a_302_over_the_limit_on_the_wire_ends_as_body_too_large_uninflated(
    serve: Callable[..., RawServer],
) -> None:
    # The limit counts the bytes as sent; decoding them as they came would inflate all that
    # arrived before the limit (64 KB on the wire: 64 MB).
    on_the_wire = bomb("gzip", INFLATED)
    assert len(on_the_wire) > 64_000
    server = serve(compressed_answer("302 Found", "gzip", on_the_wire))

    (result, elapsed), peak = traced_peak(
        lambda: timed_probe(target(server.url("/"), max_body_bytes=64_000))
    )

    assert_down(result, Reason.BODY_TOO_LARGE)
    assert peak < PEAK_BYTES, f"{peak / 1_048_576:.0f} MB held: the bomb was inflated"
    assert elapsed < 1.0


def test_a_redirect_bomb_that_would_take_longer_to_inflate_than_the_timeout_cannot_hold_the_probe(
    serve: Callable[..., RawServer],
) -> None:
    # 512 MB from a single KB (`gzip, gzip`): inflated on the event loop in one call that no
    # deadline interrupts, this took a second and a gigabyte; the 6.6 KB took 3 GB.
    stacked = bomb("gzip, gzip", 4 * INFLATED)
    assert len(stacked) < 2_000
    server = serve(compressed_answer("302 Found", "gzip, gzip", stacked))

    result, elapsed = timed_probe(target(server.url("/"), timeout_s=0.3))

    assert result.status == "up", result
    assert elapsed <= 0.3 + LATE_S


def test_a_worker_does_not_remember_every_long_url_a_server_redirects_to(
    serve_apart: Callable[..., ServerProcess],
) -> None:
    # The transport remembers parsed URLs (16,384 of them); a site redirecting to a new
    # 7 KB URL every time filled that with 20 KB an entry, over 300 MB in a worker's life.
    # (The server is apart so that its own threads' memory is not counted.)
    server = serve_apart(new_long_redirects())

    async def probes(count: int) -> None:
        async with make_client() as client:
            for _ in range(count):
                result = await probe(client, target(server.url("/")))
                assert result.reason == Reason.TOO_MANY_REDIRECTS, result

    tracemalloc.start()
    try:
        asyncio.run(probes(40))  # fills what is bounded anyway (yarl's own caches of 128)
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        asyncio.run(probes(100))  # 500 more URLs of 7 KB
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert after - before < 1_048_576, f"{(after - before) / 1_048_576:.1f} MB more held"


# --------------------------------------------------------------------------- a whole batch

# Checks of each hostile kind in the batch test, each to the kind's one server.
REPEATS = 3


def test_every_probe_in_a_batch_with_every_hostile_kind_ends_by_its_own_deadline(
    serve_apart: Callable[..., ServerProcess],
) -> None:
    # The healthy services take 0.3 s to answer, so they are in flight while the hostile
    # ones do their worst: anything that holds the event loop (inflating a bomb, parsing a
    # flood of cookies) makes them late. Hostile deadlines differ, as checks' timeouts do.
    # Several checks of each kind, as a batch of 100 can hold: the loop's turns grow with
    # every probe that is busy at once.
    healthy = serve_apart(healthy_after(0.3))
    hostile = [(kind, serve_apart(kind.handler())) for kind in ZOO] * REPEATS
    targets = [
        target(
            server.url("/", kind.scheme),
            timeout_s=(0.8, 1.0, 1.2)[n % 3],
            max_body_bytes=kind.max_body_bytes,
            check_id=n,
        )
        for n, (kind, server) in enumerate(hostile)
    ]
    targets += [
        target(healthy.url(f"/{n}"), timeout_s=1.0, check_id=1000 + n)
        for n in range(100 - len(targets))
    ]
    deadlines = {t.check_id: t.timeout_s for t in targets}

    async def batch() -> list[ProbeResult]:
        # As a worker probes: the SSRF guard on (loopback allow-listed), probe_all as
        # tasks/probes.run_batch calls it.
        policy = AddressPolicy.from_allow_list(["127.0.0.0/8"])
        async with make_client(policy=policy) as client:
            return await probe_all(client, targets)

    started = time.perf_counter()
    results = asyncio.run(batch())
    elapsed = time.perf_counter() - started

    late = [
        (r.check_id, r.latency_ms, r.reason)
        for r in results
        if r.latency_ms is None or r.latency_ms > 1000 * (deadlines[r.check_id] + LATE_S)
    ]
    assert not late, f"probes past their own deadline (check id, ms, reason): {late}"
    for (kind, _), result in zip(hostile, results, strict=False):
        assert (result.status, result.reason) == expected_outcome(kind), (kind.name, result)
    healthy_results = results[len(hostile) :]
    assert all(r.status == "up" for r in healthy_results), [r for r in healthy_results if not r.ok]
    assert elapsed <= max(deadlines.values()) + LATE_S


def test_bodies_in_one_byte_chunks_do_not_keep_a_batch_s_redirected_checks_from_their_answers(
    serve_apart: Callable[..., ServerProcess],
) -> None:
    # Each one-byte chunk costs about 2 microseconds of parsing on the event loop, so a body
    # sent that way kept its probe busy until its deadline (a 1 MB limit is a million
    # chunks), and every turn of the loop waited for all of them: with 40 in a batch, healthy
    # checks that follow three redirects (54 ms alone) all timed out at 1 s.
    hostile = [serve_apart(tiny_chunks(b"1\r\nx\r\n")) for _ in range(4)]
    healthy = serve_apart(
        routes(
            {
                "/": ("302 Found", b"", "Location: /a\r\n"),
                "/a": ("302 Found", b"", "Location: /b\r\n"),
                "/b": ("302 Found", b"", "Location: /c\r\n"),
                "/c": ("200 OK", b"ok", ""),
            }
        )
    )
    targets = [
        target(hostile[n % 4].url("/"), timeout_s=1.0, max_body_bytes=64 * 1_048_576, check_id=n)
        for n in range(40)
    ]
    targets += [target(healthy.url("/"), timeout_s=1.0, check_id=1000 + n) for n in range(20)]

    async def batch() -> list[ProbeResult]:
        async with make_client() as client:
            return await probe_all(client, targets)

    results = asyncio.run(batch())

    assert all(r.latency_ms is not None and r.latency_ms <= 1000 * (1.0 + LATE_S) for r in results)
    redirected = results[40:]
    assert [r.status for r in redirected] == ["up"] * 20, [r for r in redirected if not r.ok][:3]
