"""P2: from the outcome that crosses a critical threshold to the page arriving at a webhook.

    .venv/bin/python -m bench.alert_latency_bench [--incidents 200] [--wave 10] [--gap 0.5]
                                                 [--burst 100]

Starts nginx (a /fail page answering 500), a private Redis, a scratch database and a real
eventops worker (-c 2, queues probes, pipeline, escalations), plus a webhook receiver that
stamps each arrival. Each check has alert_threshold 1, severity critical, its own group and
a critical policy paging the webhook at once. `probes.run_batch` tasks probe --wave checks
every --gap seconds until --incidents incidents have been raised; then --burst checks fail
in one batch (many checks failing at once). Latency per incident: the arrival time of its
page minus the observed_at of the outcome that opened it (both this machine's clock).
Prints p50, p99 and the worst (goal: p99 <= 1 s).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from celery import Celery

from bench import harness

TITLE = re.compile(r"(p2-\d+) is down")


def observed_at(database_url: str) -> dict[str, float]:
    with psycopg.connect(**harness.libpq(database_url)) as conn:
        rows = conn.execute(
            "SELECT c.name, min(o.observed_at) FROM outcomes o JOIN checks c ON c.id = o.check_id"
            " WHERE o.status = 'down' GROUP BY c.name"
        ).fetchall()
    return {name: at.timestamp() for name, at in rows}


def latencies(
    receiver: harness.StampingReceiver, database_url: str, names: list[str]
) -> list[float]:
    opened = observed_at(database_url)
    arrived: dict[str, float] = {}
    for at, body in receiver.snapshot():
        for name in TITLE.findall(str(body.get("title", "")) + str(body.get("message", ""))):
            arrived.setdefault(name, at)
    return [arrived[n] - opened[n] for n in names if n in arrived and n in opened]


def run_scenario(
    client: Celery,
    receiver: harness.StampingReceiver,
    database_url: str,
    ids: dict[str, int],
    names: list[str],
    wave: int,
    gap: float,
) -> list[float]:
    slot = datetime.now(UTC).replace(microsecond=0).isoformat()
    for start in range(0, len(names), wave):
        batch = [[ids[n], slot] for n in names[start : start + wave]]
        client.send_task("probes.run_batch", args=[batch], queue="probes")
        time.sleep(gap)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = latencies(receiver, database_url, names)
        if len(found) >= len(names):
            break
        time.sleep(0.5)
    return latencies(receiver, database_url, names)


def stages(database_url: str, names: list[str]) -> str:
    """Median time spent in each stage: probe -> incident opened (pipeline) -> message
    queued (sweeper) -> sent (Apprise)."""
    with psycopg.connect(**harness.libpq(database_url)) as conn:
        rows = conn.execute(
            """
            SELECT extract(epoch FROM i.opened_at - min(o.observed_at)),
                   extract(epoch FROM min(n.created_at) - i.opened_at),
                   extract(epoch FROM min(n.sent_at) - min(n.created_at))
            FROM checks c
            JOIN outcomes o ON o.check_id = c.id AND o.status = 'down'
            JOIN incidents i ON i.check_id = c.id
            JOIN notification_items ni ON ni.incident_id = i.id
            JOIN notifications n ON n.id = ni.notification_id
            WHERE c.name = ANY(%s)
            GROUP BY c.name, i.opened_at
            """,
            (names,),
        ).fetchall()
    if not rows:
        return "no stages recorded"
    columns = list(zip(*rows, strict=True))
    labels = ("outcome -> incident opened", "opened -> message queued", "queued -> sent")
    return ", ".join(
        f"{label} p50 {harness.percentile([float(v) for v in column if v is not None], 50):.3f}"
        f" s / p99 {harness.percentile([float(v) for v in column if v is not None], 99):.3f} s"
        for label, column in zip(labels, columns, strict=True)
    )


def report(label: str, values: list[float], expected: int) -> None:
    if not values:
        print(f"{label}: no page arrived")
        return
    print(
        f"{label}: {len(values)}/{expected} pages, p50 {harness.percentile(values, 50):.3f} s, "
        f"p99 {harness.percentile(values, 99):.3f} s, worst {max(values):.3f} s "
        f"(load {harness.load()})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--wave", type=int, default=10, help="checks failing together")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between waves")
    parser.add_argument("--burst", type=int, default=100, help="then this many at once")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--dedicated-sweeper",
        action="store_true",
        help="one worker (-c 1) for probes and pipeline, another (-c 1) for escalations",
    )
    options = parser.parse_args(argv)
    print(harness.machine())
    total = options.incidents + options.burst
    with (
        tempfile.TemporaryDirectory(prefix="eventops-bench-") as tmp,
        harness.Nginx(Path(tmp)) as nginx,
        harness.private_redis(Path(tmp)) as broker,
        harness.scratch_database() as database,
        harness.StampingReceiver() as receiver,
    ):
        workdir = Path(tmp)
        names = [f"p2-{n:04d}" for n in range(total)]
        checks = [
            {
                "name": name,
                "url": nginx.url(keepalive=True, path="/fail"),
                "interval": "1h",
                "timeout": "5s",
                "alert_threshold": 1,
                "severity": "critical",
                "group": name,
            }
            for name in names
        ]
        config = harness.write_config(
            workdir / "eventops.json",
            checks,
            channels=[{"name": "hook", "url": receiver.apprise_url}],
            policies={"critical": {"steps": [{"after": "0s", "channels": ["hook"]}]}},
        )
        env = harness.bench_env(database, broker, config, workdir)
        print(harness.migrate(env))
        with psycopg.connect(**harness.libpq(database)) as conn:
            ids = {n: int(i) for i, n in conn.execute("SELECT id, name FROM checks").fetchall()}
        with contextlib.ExitStack() as stack:
            if options.dedicated_sweeper:
                stack.enter_context(harness.worker(env, workdir, 1, queues="probes,pipeline"))
                stack.enter_context(harness.worker(env, workdir, 1, queues="escalations"))
            else:
                queues = "probes,pipeline,escalations"
                stack.enter_context(harness.worker(env, workdir, options.processes, queues))
            client = stack.enter_context(Celery(broker=broker))
            waves = run_scenario(
                client,
                receiver,
                database,
                ids,
                names[: options.incidents],
                options.wave,
                options.gap,
            )
            report(
                f"{options.incidents} incidents, {options.wave} every {options.gap} s",
                waves,
                options.incidents,
            )
            print("  stages:", stages(database, names[: options.incidents]))
            if options.burst:
                burst = run_scenario(
                    client, receiver, database, ids, names[options.incidents :], options.burst, 0
                )
                report(f"{options.burst} checks failing in one batch", burst, options.burst)
                print("  stages:", stages(database, names[options.incidents :]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
