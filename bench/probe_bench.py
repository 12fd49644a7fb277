"""P1: checks probed per second end to end, against Prometheus blackbox_exporter.

    .venv/bin/python -m bench.probe_bench [--seconds 20] [--checks 1000] [--batch 100]

Starts on loopback: nginx (Debian's nginx-light, installed if missing) serving a 200 page on
a keep-alive port and on a port that closes every connection after one response,
blackbox_exporter (Debian's prometheus-blackbox-exporter, an http_2xx module of ours), a
private Redis, a scratch database on the local Postgres, and real eventops workers.

- blackbox_exporter: `wrk` drives /probe?target=<close port> with 64 connections for
  --seconds, before every eventops mode and after the last; a mode's ratio is against the
  mean of the blackbox runs around it (blackbox makes a new connection per probe by design).
  wrk straight at nginx shows the driver and the target are not the limit.
- eventops: `probes.run_batch` tasks (the same task beat's dispatch fans out, --batch probes
  each) are kept queued for a worker; each probe's outcome is inserted, its check's state
  advanced, incidents opened/resolved as needed (core.pipeline.record_outcomes), all in the
  worker. The rate is outcomes persisted per second over the window, counted in Postgres.
  Modes: new connection per probe (the close port), keep-alive (the keep-alive port), and
  1 vs 2 worker processes. CPU seconds per 1,000 probes are the worker's (main + pool).

Rules are evaluated by their own beat tick over the stored outcomes, not per probe, so
their cost does not scale with the probe rate; they are not part of this figure.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg
import redis
from celery import Celery

from bench import harness


class Feeder:
    """Keeps the probes queue topped up with run_batch tasks, one round of every check after
    another (round r = slot start + r seconds, so every outcome is new). Slots start now, as
    real ones do: an old slot would be a late outcome and queue a rollup re-roll."""

    def __init__(
        self,
        broker_url: str,
        check_ids: Sequence[int],
        batch: int,
        depth: int = 8,
        after: datetime | None = None,
    ):
        self.client = Celery(broker=broker_url)
        self.redis = redis.Redis.from_url(broker_url)
        self.check_ids = list(check_ids)
        self.batch = batch
        self.depth = depth
        self.round = 0
        # Rounds go faster than one a second, so an earlier mode's slots can lie ahead of
        # now: start after them, or every outcome would be a duplicate (written once, counted
        # never) and the mode would look slower than it is.
        now = datetime.now(UTC).replace(microsecond=0)
        self.start = max(now, after + timedelta(seconds=1)) if after else now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _send_round(self) -> None:
        slot = (self.start + timedelta(seconds=self.round)).isoformat()
        self.round += 1
        for start in range(0, len(self.check_ids), self.batch):
            pairs = [[i, slot] for i in self.check_ids[start : start + self.batch]]
            self.client.send_task("probes.run_batch", args=[pairs], queue="probes")

    def _run(self) -> None:
        while not self._stop.is_set():
            if int(self.redis.llen("probes")) < self.depth:
                self._send_round()
            else:
                time.sleep(0.02)

    def __enter__(self) -> Feeder:
        self._send_round()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.redis.delete("probes")
        self.client.close()


def outcome_count(database_url: str) -> int:
    with psycopg.connect(**harness.libpq(database_url)) as conn:
        row = conn.execute("SELECT count(*) FROM outcomes").fetchone()
        return int(row[0]) if row else 0


def last_slot(database_url: str, ids: Sequence[int]) -> datetime | None:
    with psycopg.connect(**harness.libpq(database_url)) as conn:
        row = conn.execute(
            "SELECT max(slot) FROM outcomes WHERE check_id = ANY(%s)", (list(ids),)
        ).fetchone()
        return row[0] if row else None


def check_ids(database_url: str, prefix: str) -> list[int]:
    with psycopg.connect(**harness.libpq(database_url)) as conn:
        rows = conn.execute(
            "SELECT id FROM checks WHERE name LIKE %s ORDER BY id", (prefix + "%",)
        ).fetchall()
    return [int(r[0]) for r in rows]


def run_ours(
    env: dict[str, str],
    workdir: Path,
    ids: Sequence[int],
    *,
    processes: int,
    batch: int,
    seconds: float,
    warmup: float = 3.0,
) -> tuple[float, float]:
    """(outcomes per second, worker CPU seconds per 1,000 probes) over the window."""
    url = env["EVENTOPS_DATABASE_URL"]
    with (
        harness.worker(env, workdir, processes, queues="probes") as main,
        Feeder(
            env["EVENTOPS_BROKER_URL"],
            ids,
            batch,
            depth=4 * processes,
            after=last_slot(url, ids),
        ),
    ):
        time.sleep(warmup)
        members = harness.tree(main)
        cpu0, count0, t0 = harness.cpu_seconds(members), outcome_count(url), time.monotonic()
        time.sleep(seconds)
        cpu1, count1, t1 = harness.cpu_seconds(members), outcome_count(url), time.monotonic()
    probes = count1 - count0
    rate = probes / (t1 - t0)
    cpu_per_k = (cpu1 - cpu0) / probes * 1000 if probes else float("nan")
    return rate, cpu_per_k


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="measuring window per mode")
    parser.add_argument("--checks", type=int, default=1000, help="checks per mode")
    parser.add_argument("--batch", type=int, default=100, help="probes per run_batch task")
    parser.add_argument(
        "--connections", type=int, default=64, help="wrk connections to blackbox_exporter"
    )
    parser.add_argument(
        "--big-batch", type=int, default=500, help="the larger batch size also measured"
    )
    options = parser.parse_args(argv)
    seconds = int(options.seconds)
    print(harness.machine())
    with (
        tempfile.TemporaryDirectory(prefix="eventops-bench-") as tmp,
        harness.Nginx(Path(tmp)) as nginx,
        harness.Blackbox(Path(tmp)) as blackbox,
        harness.private_redis(Path(tmp)) as broker,
        harness.scratch_database() as database,
    ):
        workdir = Path(tmp)
        target = nginx.url(keepalive=False)
        nginx_direct = harness.wrk(nginx.url(keepalive=True), 5, options.connections)
        print(f"driver check: wrk straight at nginx {nginx_direct:,.0f} req/s")

        exporter = psutil.Process(blackbox.pid)

        def blackbox_rate() -> float:
            cpu_before = harness.cpu_seconds([exporter])
            rate = harness.wrk(blackbox.probe_url(target), seconds, options.connections)
            # Its own CPU per 1,000 probes (the HTTP server for /probe included): the cost
            # side of the comparison, steadier than the rate on a shared machine.
            cpu = (harness.cpu_seconds([exporter]) - cpu_before) / (rate * seconds) * 1000
            print(
                f"blackbox_exporter: {rate:,.0f} probes/s (wrk -c{options.connections}, "
                f"new connection per probe), {cpu:.2f} CPU s per 1,000 probes, "
                f"load {harness.load()}",
                flush=True,
            )
            return rate

        def check(name: str, url: str) -> dict[str, object]:
            return {"name": name, "url": url, "interval": "1m", "timeout": "5s"}

        checks = [check(f"close-{n:05d}", target) for n in range(options.checks)] + [
            check(f"ka-{n:05d}", nginx.url(keepalive=True)) for n in range(options.checks)
        ]
        config = harness.write_config(workdir / "eventops.json", checks)
        env = harness.bench_env(database, broker, config, workdir)
        print(harness.migrate(env))
        close_ids, ka_ids = check_ids(database, "close-"), check_ids(database, "ka-")

        # blackbox is measured before every mode and after the last: the machine's load
        # drifts within minutes, so each mode's ratio uses the blackbox runs around it.
        results: list[tuple[str, float, float, str]] = []
        baselines = [blackbox_rate()]
        big = options.big_batch
        for label, ids, processes, batch in (
            ("new connection per probe, 1 process", close_ids, 1, options.batch),
            ("keep-alive, 1 process", ka_ids, 1, options.batch),
            ("new connection per probe, 2 processes", close_ids, 2, options.batch),
            ("keep-alive, 2 processes", ka_ids, 2, options.batch),
            (f"keep-alive, 1 process, batches of {big}", ka_ids, 1, big),
            (f"keep-alive, 2 processes, batches of {big}", ka_ids, 2, big),
        ):
            rate, cpu = run_ours(
                env, workdir, ids, processes=processes, batch=batch, seconds=seconds
            )
            results.append((label, rate, cpu, harness.load()))
            print(
                f"eventops {label}: {rate:,.0f} probes/s end to end, "
                f"{cpu:.2f} CPU s per 1,000 probes, load {harness.load()}",
                flush=True,
            )
            baselines.append(blackbox_rate())
        print()
        print(f"probes per run_batch task: {options.batch} unless said")
        print(
            "| eventops mode | probes/s | blackbox before/after, probes/s | ratio to their mean "
            "| CPU s / 1,000 probes | load |"
        )
        print("|---|---|---|---|---|---|")
        for n, (label, rate, cpu, load) in enumerate(results):
            before, after = baselines[n], baselines[n + 1]
            ratio = rate / ((before + after) / 2)
            print(
                f"| {label} | {rate:,.0f} | {before:,.0f} / {after:,.0f} | {ratio:.2f} "
                f"| {cpu:.2f} | {load} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
