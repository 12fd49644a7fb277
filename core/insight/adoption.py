"""Feature adoption: the share of active users (any product event in the lookback) who used
a feature (any of its events), stored per (feature, period end)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.insight import platform
from models.config_insight import FeatureConfig
from models.insight import FeatureAdoption

_ADOPTION = """
SELECT count(DISTINCT user_id) FILTER (WHERE name = ANY(%(events)s)),
       count(DISTINCT user_id)
FROM product_events
WHERE at > %(start)s AND at <= %(end)s
"""


@dataclass(frozen=True)
class Adoption:
    feature: str
    users: int
    active_users: int
    share: float | None
    target: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_adoption(
    db: psycopg.Connection[Any], feature: FeatureConfig, end: datetime
) -> Adoption:
    [(users, active)] = platform.rows(
        db, _ADOPTION, {"events": feature.events, "start": end - feature.lookback, "end": end}
    )
    return Adoption(
        feature.name, int(users), int(active), users / active if active else None, feature.target
    )


def store_adoption(
    session: Session, feature: FeatureConfig, end: datetime, adoption: Adoption, now: datetime
) -> None:
    row = {
        "feature": feature.name,
        "period_start": end - feature.lookback,
        "period_end": end,
        "users": adoption.users,
        "active_users": adoption.active_users,
        "share": adoption.share,
        "computed_at": now,
    }
    statement = insert(FeatureAdoption).values(row)
    session.execute(
        statement.on_conflict_do_update(
            constraint="uq_feature_adoption_key",
            set_={
                k: statement.excluded[k] for k in ("users", "active_users", "share", "computed_at")
            },
        )
    )
