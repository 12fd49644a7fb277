"""Demo platform logs: JSON-lines files of the four kinds eventops ingests, with known errors.

`write_demo_logs(directory, now)` writes `application.jsonl`, `system.jsonl`,
`security.jsonl` and `business.jsonl` covering the hour before `now`, deterministic for a
seed, and returns what they hold, so a test (or a person trying `eventops logs ingest`)
knows the answer:

- application: one request log a second (info), a recurring error ("payment intent
  <stripe id> failed for booking <n>") once a minute, and in the last ten minutes a new
  error that bursts: "mapbox geocoding timed out after <n> ms for venue <uuid>" 30 times;
- system: a disk usage warning every five minutes and one error;
- security: failed logins (warning) and one "account locked" error;
- business: bookings created and payments captured (info).

Try it: `python -m demo.platform_logs --dir var/demo-logs`, then add a source such as
`{name: demo-app, kind: application, path: demo-logs/application.jsonl}` to the config.
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

RECURRING = "payment intent pi_{token} failed for booking {n}: card_declined"
BURST = "mapbox geocoding timed out after {ms} ms for venue {venue}"
BURST_COUNT = 30


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    entries.sort(key=lambda e: e["timestamp"])
    with path.open("w") as handle:
        for entry in entries:
            handle.write(json.dumps(entry) + "\n")


def write_demo_logs(directory: Path, now: datetime, seed: int = 7) -> dict[str, Any]:
    """Write the four files for the hour before `now`; return counts and the known errors."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    start = now - timedelta(hours=1)

    def at(seconds: float) -> str:
        return (start + timedelta(seconds=seconds)).isoformat()

    def token() -> str:
        return "".join(
            rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
            for _ in range(14)
        )

    application: list[dict[str, Any]] = []
    for second in range(3600):
        application.append(
            {
                "timestamp": at(second),
                "level": "info",
                "service": "web",
                "message": f"GET /api/vendors/{rng.randint(1, 500)} 200",
                "duration_ms": rng.randint(20, 400),
            }
        )
    for minute in range(60):
        application.append(
            {
                "timestamp": at(minute * 60 + 30.5),
                "level": "error",
                "service": "payments",
                "message": RECURRING.format(token=token(), n=rng.randint(1000, 9999)),
            }
        )
    for n in range(BURST_COUNT):
        application.append(
            {
                "timestamp": at(3000 + n * 15 + 0.25),
                "level": "error",
                "service": "maps",
                "message": BURST.format(
                    ms=rng.randint(5000, 9000), venue=uuid.UUID(int=rng.getrandbits(128))
                ),
            }
        )
    system = [
        {
            "timestamp": at(minute * 60 + 1),
            "level": "warning",
            "service": "host-1",
            "message": f"disk /var/lib/postgresql at {80 + minute // 10}%",
        }
        for minute in range(0, 60, 5)
    ]
    system.append(
        {
            "timestamp": at(1800.5),
            "level": "error",
            "service": "host-1",
            "message": "oom-killer: killed process 4242 (node)",
        }
    )
    security = [
        {
            "timestamp": at(second * 37 % 3600 + 0.75),
            "level": "warning",
            "service": "auth",
            "message": f"login failed for user{second}@example.test from 203.0.113.{second % 50}",
        }
        for second in range(40)
    ]
    security.append(
        {
            "timestamp": at(2400.75),
            "level": "error",
            "service": "auth",
            "message": "account locked after 10 failed logins: vendor@example.test",
        }
    )
    business = [
        {
            "timestamp": at(minute * 60 + 10.125),
            "level": "info",
            "service": "bookings",
            "message": f"booking {1000 + minute} confirmed",
            "amount_cents": rng.randint(10_000, 500_000),
        }
        for minute in range(60)
    ]
    files = {
        "application": application,
        "system": system,
        "security": security,
        "business": business,
    }
    for kind, entries in files.items():
        _write(directory / f"{kind}.jsonl", entries)
    return {
        "lines": {kind: len(entries) for kind, entries in files.items()},
        "errors": {"application": 60 + BURST_COUNT, "system": 1, "security": 1, "business": 0},
        "patterns": {
            "payments": "payment intent <id> failed for booking <num>: card_declined",
            "maps": "mapbox geocoding timed out after <num> ms for venue <uuid>",
        },
        "burst": {"service": "maps", "count": BURST_COUNT, "first": at(3000.25)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where to write the files")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = write_demo_logs(args.dir, datetime.now(UTC), args.seed)
    print(json.dumps(result["lines"]))


if __name__ == "__main__":
    main()
