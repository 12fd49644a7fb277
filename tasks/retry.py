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

RETRY: dict[str, Any] = {
    "autoretry_for": INFRASTRUCTURE_FAULTS,
    "retry_backoff": True,
    "max_retries": 3,
}
