"""Config validation at 1,000 to 100,000 checks (issue 15): time and peak memory.

    .venv/bin/python -m bench.config_bench [--checks 1000 10000 100000]

Writes a config of N checks (every tenth depending on the one before, twenty groups, a rule
per group, a channel and a policy) to a temporary file and runs `load_config` on it in a
fresh process per size, as `eventops config check` does: read (the file's YAML, through
models/config_yaml.py) and validate (pydantic, cross-references, the columns each value is
written to). Validation's CPU time is shown too: on a shared machine it varies less than the
wall clock. Peak memory is the process's maximum RSS, the interpreter and imports included
(about 100 MB of it before the file is read).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench import harness

# Peak RSS is VmHWM: ru_maxrss would count the parent's memory from before the exec.
_MEASURE = """
import json, re, sys, time
from pathlib import Path
from models.config import parse_config
from models.config_yaml import read_config_file

def peak_mb():
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024

path = Path(sys.argv[1])
before = peak_mb()
start = time.perf_counter()
data = read_config_file(path)
read = time.perf_counter()
cpu = time.process_time()
config = parse_config(data)
done = time.perf_counter()
cpu_done = time.process_time()
print(json.dumps({
    "checks": len(config.checks),
    "read_s": read - start,
    "validate_s": done - read,
    "validate_cpu_s": cpu_done - cpu,
    "rss_before_mb": before,
    "rss_peak_mb": peak_mb(),
}))
"""


def config_of(checks: int) -> dict:
    groups = [f"group-{g:02d}" for g in range(20)]
    return {
        "platform_url": "https://eventpros.example",
        "checks": [
            {
                "name": f"check-{n:06d}",
                "url": f"{{platform_url}}/api/health/{n}",
                "interval": "1m",
                "timeout": "5s",
                "alert_threshold": 2,
                "group": groups[n % len(groups)],
                **({"depends_on": [f"check-{n - 1:06d}"]} if n % 10 == 1 else {}),
            }
            for n in range(checks)
        ],
        "channels": [{"name": "ops", "url": "json://127.0.0.1:9/hook"}],
        "policies": {"critical": {"steps": [{"after": "0s", "channels": ["ops"]}]}},
        "rules": [
            {
                "name": f"slow-{group}",
                "metric": "response_time",
                "op": ">",
                "threshold": 2000,
                "severity": "warning",
                "groups": [group],
            }
            for group in groups
        ],
    }


def measure(checks: int, directory: Path) -> dict:
    path = directory / f"eventops-{checks}.yaml"
    path.write_text(yaml.safe_dump(config_of(checks), sort_keys=False))
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return {**json.loads(result.stdout), "file_mb": path.stat().st_size / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, nargs="+", default=[1000, 10_000, 100_000])
    options = parser.parse_args(argv)
    print(harness.machine())
    print("| checks | file | read (YAML) | validate (CPU) | total | peak RSS (before reading) |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="eventops-bench-") as tmp:
        for checks in options.checks:
            r = measure(checks, Path(tmp))
            print(
                f"| {r['checks']:,} | {r['file_mb']:.1f} MB | {r['read_s']:.2f} s "
                f"| {r['validate_s']:.2f} s ({r['validate_cpu_s']:.2f} s) "
                f"| {r['read_s'] + r['validate_s']:.2f} s "
                f"| {r['rss_peak_mb']:.0f} MB ({r['rss_before_mb']:.0f} MB) |",
                flush=True,
            )
    print(harness.machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
