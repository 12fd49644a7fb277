"""Tasks that read the platform database retry when it is unreachable, like eventops' own."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError

from workers.app import app

PLATFORM_READERS = (
    "insight.kpis",
    "insight.analytics",
    "insight.experiments",
    "compliance.privacy",
    "reports.capacity_snapshot",
    "security.tick",
)


@pytest.mark.parametrize("name", PLATFORM_READERS)
def test_a_task_reading_the_platform_retries_when_it_is_unreachable(name: str) -> None:
    app.loader.import_default_modules()
    task = app.tasks[name]
    retried = tuple(getattr(task, "autoretry_for", ()))
    assert psycopg.OperationalError in retried and DBAPIError in retried
    assert task.max_retries == 3 and task.retry_backoff
