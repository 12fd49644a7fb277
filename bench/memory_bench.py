"""P5: worker memory over a run at full probe rate (default 10 minutes).

    .venv/bin/python -m bench.memory_bench [--minutes 10] [--checks 1000] [--processes 2]

Starts nginx, a private Redis, a scratch database and a real eventops worker, and keeps its
probes queue full of `probes.run_batch` tasks (bench.probe_bench's feeder: every probe is a
new outcome persisted with its state) for --minutes. Samples the RSS of the worker's main
process plus its pool processes every --every seconds, drops the first minute (imports,
pools and caches filling), fits a least-squares line to the rest and prints its slope.

Flat means: the fitted growth over the measured run is under 2 % of the mean RSS and under
1 MB per minute. (A leak of one object per probe at ~1 KB and 300 probes/s would be 18 MB
a minute; allocator noise is a few MB either way.)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench import harness
from bench.probe_bench import Feeder, check_ids, outcome_count

FLAT_FRACTION = 0.02
FLAT_MB_PER_MIN = 1.0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--every", type=float, default=5, help="seconds between samples")
    options = parser.parse_args(argv)
    print(harness.machine())
    with (
        tempfile.TemporaryDirectory(prefix="eventops-bench-") as tmp,
        harness.Nginx(Path(tmp)) as nginx,
        harness.private_redis(Path(tmp)) as broker,
        harness.scratch_database() as database,
    ):
        workdir = Path(tmp)
        checks = [
            {
                "name": f"mem-{n:05d}",
                "url": nginx.url(keepalive=True),
                "interval": "1m",
                "timeout": "5s",
            }
            for n in range(options.checks)
        ]
        config = harness.write_config(workdir / "eventops.json", checks)
        env = harness.bench_env(database, broker, config, workdir)
        print(harness.migrate(env))
        ids = check_ids(database, "mem-")
        samples: list[tuple[float, float]] = []
        with (
            harness.worker(env, workdir, options.processes, queues="probes") as main,
            Feeder(broker, ids, options.batch, depth=4 * options.processes),
        ):
            started = time.monotonic()
            count0 = outcome_count(database)
            members = harness.tree(main)
            while (elapsed := time.monotonic() - started) < options.minutes * 60:
                samples.append((elapsed / 60, harness.rss_mb(members)))
                time.sleep(options.every)
            probes = outcome_count(database) - count0
            rate = probes / (time.monotonic() - started)
    measured = [(m, rss) for m, rss in samples if m >= 1.0] or samples
    trend = slope(measured)
    mean = statistics.fmean(rss for _, rss in measured)
    span = measured[-1][0] - measured[0][0]
    growth = trend * span
    flat = abs(growth) < FLAT_FRACTION * mean and abs(trend) < FLAT_MB_PER_MIN
    print(
        f"{probes:,} probes in {options.minutes:g} min ({rate:,.0f}/s), "
        f"{options.processes} pool processes"
    )
    per_minute = [next(s for s in samples if s[0] >= k) for k in range(int(samples[-1][0]) + 1)]
    print(
        "RSS MB (main + pool) at minute "
        + ", ".join(f"{m:.0f}: {rss:.0f}" for m, rss in [*per_minute, samples[-1]])
    )
    print(
        f"RSS first {measured[0][1]:.1f} MB, last {measured[-1][1]:.1f} MB, mean {mean:.1f} MB; "
        f"slope {trend:+.3f} MB/min ({growth:+.1f} MB over {span:.1f} min): "
        f"{'flat' if flat else 'GROWING'} (load {harness.load()})"
    )
    return 0 if flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
