"""Named metric samples in Postgres: what later duties measure and the rule engine reads."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session

from core.clock import utcnow
from models.tables import Metric


def record_metric(
    session: Session,
    name: str,
    value: float,
    subject: str = "platform",
    at: datetime | None = None,
) -> None:
    """One sample: `record_metric(s, "memory_usage", 0.83, subject="worker-1")`."""
    session.execute(
        insert(Metric).values(name=name, subject=subject, value=float(value), at=at or utcnow())
    )


def record_metrics(session: Session, samples: Iterable[tuple[str, str, float, datetime]]) -> int:
    """Many samples of (name, subject, value, at) in one statement."""
    rows = [{"name": n, "subject": s, "value": float(v), "at": a} for n, s, v, a in samples]
    if rows:
        session.execute(insert(Metric), rows)
    return len(rows)
