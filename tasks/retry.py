"""The retry policy of the duty tasks: only infrastructure faults are retried, with backoff.

eventops' own Postgres (SQLAlchemy's DBAPIError) and the platform's database (read with
psycopg directly: psycopg.OperationalError when it is unreachable) are both infrastructure.
A query that is wrong (psycopg.ProgrammingError) is not: retrying it changes nothing.
"""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError

INFRASTRUCTURE_FAULTS: tuple[type[BaseException], ...] = (DBAPIError, psycopg.OperationalError)

# The probe tasks (tasks/probes.py) never read the platform's database; they meet eventops'
# Postgres and sockets. A broker that cannot take their fan-out is not retried here (the
# retry would go through the same broker): the slots' leases run out and the dispatcher
# sends those slots again. A failed probe is not here either: it is an outcome, not an error.
PROBE_FAULTS: tuple[type[BaseException], ...] = (DBAPIError, ConnectionError, OSError)

RETRY: dict[str, Any] = {
    "autoretry_for": INFRASTRUCTURE_FAULTS,
    "retry_backoff": True,
    "max_retries": 3,
}
