"""Every periodic tick beat emits: cheap ticks that make workers claim due work from Postgres.

Each entry expires after its own period: a tick that waited in the queue that long is
stale, and the next one does the same work.
"""

from __future__ import annotations

from typing import Any

DISPATCH_EVERY_S = 2.0
SWEEP_EVERY_S = 5.0

BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "dispatch-due-checks": {
        "task": "probes.dispatch_due",
        "schedule": DISPATCH_EVERY_S,
        "options": {"queue": "pipeline", "expires": DISPATCH_EVERY_S * 5},
    },
    "sweep-escalations": {
        "task": "escalations.sweep",
        "schedule": SWEEP_EVERY_S,
        "options": {"queue": "escalations", "expires": SWEEP_EVERY_S * 3},
    },
    "evaluate-rules": {
        "task": "rules.evaluate",
        "schedule": 30.0,
        "options": {"queue": "pipeline", "expires": 90.0},
    },
}
