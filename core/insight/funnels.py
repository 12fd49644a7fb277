"""Conversion funnels: ordered product events, per-step conversion and drop-off.

Step k counts the users who did steps 1..k in that order, the last no later than the funnel's
`window` after the first, all within the lookback (Mixpanel's and Amplitude's ordered
funnels). Each funnel is computed from the platform's `product_events` and stored in
`funnel_steps` per (funnel, period end, step).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.insight import platform
from models.config_insight import FunnelConfig
from models.insight import FunnelStep

_EVENTS = """
SELECT user_id::text, name, at FROM product_events
WHERE name = ANY(%(names)s) AND at > %(start)s AND at <= %(end)s
ORDER BY user_id, at, id
"""


@dataclass(frozen=True)
class StepResult:
    step: int
    event: str
    users: int
    conversion: float | None  # of step 1's users
    step_conversion: float | None  # of the previous step's users
    drop_off: int  # users lost since the previous step

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _depth(events: Sequence[tuple[str, datetime]], steps: Sequence[str], window: timedelta) -> int:
    """How far one user got: the most steps matched in order from any start. From a given
    start, taking each next step at its earliest occurrence is optimal, so one greedy pass
    per start is exact."""
    best = 0
    for i, (name, started) in enumerate(events):
        if name != steps[0]:
            continue
        matched = 1
        for later_name, at in events[i + 1 :]:
            if at - started > window:
                break
            if later_name == steps[matched]:
                matched += 1
                if matched == len(steps):
                    break
        best = max(best, matched)
        if best == len(steps):
            break
    return best


def ordered_funnel(
    events: Iterable[tuple[str, str, datetime]], steps: Sequence[str], window: timedelta
) -> list[StepResult]:
    """Per-step users of (user, event name, time) rows, which must be in time order per user."""
    by_user: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for user, name, at in events:
        by_user[user].append((name, at))
    reached = [0] * len(steps)
    for user_events in by_user.values():
        for k in range(_depth(user_events, steps, window)):
            reached[k] += 1
    results = []
    for k, event in enumerate(steps):
        previous = reached[k - 1] if k else reached[0]
        results.append(
            StepResult(
                step=k + 1,
                event=event,
                users=reached[k],
                conversion=reached[k] / reached[0] if reached[0] else None,
                step_conversion=reached[k] / previous if previous else None,
                drop_off=previous - reached[k],
            )
        )
    return results


def compute_funnel(
    db: psycopg.Connection[Any], funnel: FunnelConfig, end: datetime
) -> list[StepResult]:
    """The funnel over product events in (end - lookback, end]."""
    found = platform.rows(
        db,
        _EVENTS,
        {"names": list(dict.fromkeys(funnel.steps)), "start": end - funnel.lookback, "end": end},
    )
    return ordered_funnel(((u, n, a) for u, n, a in found), funnel.steps, funnel.window)


def store_funnel(
    session: Session,
    funnel: FunnelConfig,
    end: datetime,
    results: Sequence[StepResult],
    now: datetime,
) -> None:
    rows = [
        {
            "funnel": funnel.name,
            "period_start": end - funnel.lookback,
            "period_end": end,
            "computed_at": now,
            **r.as_dict(),
        }
        for r in results
    ]
    statement = insert(FunnelStep).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            constraint="uq_funnel_steps_key",
            set_={
                k: statement.excluded[k]
                for k in (
                    "event",
                    "users",
                    "conversion",
                    "step_conversion",
                    "drop_off",
                    "period_start",
                    "computed_at",
                )
            },
        )
    )


def latest_funnel(session: Session, name: str) -> list[StepResult]:
    """The newest stored computation of a funnel, step by step."""
    newest = session.scalar(
        select(FunnelStep.period_end)
        .where(FunnelStep.funnel == name)
        .order_by(FunnelStep.period_end.desc())
        .limit(1)
    )
    if newest is None:
        return []
    return [
        StepResult(r.step, r.event, r.users, r.conversion, r.step_conversion, r.drop_off)
        for r in session.scalars(
            select(FunnelStep)
            .where(FunnelStep.funnel == name, FunnelStep.period_end == newest)
            .order_by(FunnelStep.step)
        )
    ]
