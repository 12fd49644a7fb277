"""User feedback: average rating, NPS and recurring themes by keyword.

NPS = % promoters (9-10) - % detractors (0-6) of the NPS answers, from -100 to 100. A theme
is a list of keywords; a comment that mentions any of them (a word starting with the
keyword, case-insensitive: `slow` matches "slowly") counts once for the theme, and a theme
mentioned in at least `recurring_after` comments is recurring.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.insight import platform
from models.config_insight import FeedbackConfig
from models.insight import FeedbackSummary

_FEEDBACK = """
SELECT kind, score, comment FROM feedback
WHERE created_at > %(start)s AND created_at <= %(end)s
ORDER BY created_at, id
"""
EXAMPLES_PER_THEME = 3


@dataclass(frozen=True)
class FeedbackFigures:
    nps_responses: int
    promoters: int
    passives: int
    detractors: int
    nps: float | None
    ratings: int
    average_rating: float | None
    themes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def nps(scores: Iterable[int]) -> tuple[int, int, int, float | None]:
    """(promoters, passives, detractors, NPS) of 0-10 answers."""
    values = list(scores)
    promoters = sum(1 for s in values if s >= 9)
    detractors = sum(1 for s in values if s <= 6)
    passives = len(values) - promoters - detractors
    score = 100 * (promoters - detractors) / len(values) if values else None
    return promoters, passives, detractors, score


def _patterns(themes: Mapping[str, Sequence[str]]) -> dict[str, re.Pattern[str]]:
    return {
        theme: re.compile(
            r"\b(?:" + "|".join(re.escape(k.strip()) for k in keywords) + r")\w*", re.IGNORECASE
        )
        for theme, keywords in themes.items()
        if keywords
    }


def themes_of(
    comments: Iterable[str], themes: Mapping[str, Sequence[str]], recurring_after: int
) -> dict[str, dict[str, Any]]:
    """{theme: {"comments": n, "recurring": bool, "examples": [...]}} for every theme."""
    patterns = _patterns(themes)
    found: dict[str, dict[str, Any]] = {
        t: {"comments": 0, "recurring": False, "examples": []} for t in themes
    }
    for comment in comments:
        for theme, pattern in patterns.items():
            if comment and pattern.search(comment):
                entry = found[theme]
                entry["comments"] += 1
                if len(entry["examples"]) < EXAMPLES_PER_THEME and comment not in entry["examples"]:
                    entry["examples"].append(comment)
    for entry in found.values():
        entry["recurring"] = entry["comments"] >= recurring_after
    return found


def summarize(rows: Iterable[tuple[str, int, str]], config: FeedbackConfig) -> FeedbackFigures:
    """Figures of (kind, score, comment) rows: kind `nps` (0-10) or `rating` (1-5)."""
    nps_scores: list[int] = []
    ratings: list[int] = []
    comments: list[str] = []
    for kind, value, comment in rows:
        (nps_scores if kind == "nps" else ratings).append(int(value))
        if comment:
            comments.append(comment)
    promoters, passives, detractors, score = nps(nps_scores)
    return FeedbackFigures(
        nps_responses=len(nps_scores),
        promoters=promoters,
        passives=passives,
        detractors=detractors,
        nps=score,
        ratings=len(ratings),
        average_rating=sum(ratings) / len(ratings) if ratings else None,
        themes=themes_of(comments, config.themes, config.recurring_after),
    )


def compute_feedback(
    db: psycopg.Connection[Any], config: FeedbackConfig, end: datetime
) -> FeedbackFigures:
    rows = platform.rows(db, _FEEDBACK, {"start": end - config.lookback, "end": end})
    return summarize(((k, s, c) for k, s, c in rows), config)


def store_feedback(
    session: Session, config: FeedbackConfig, end: datetime, figures: FeedbackFigures, now: datetime
) -> None:
    row = {"period_start": end - config.lookback, "period_end": end, "computed_at": now}
    row |= figures.as_dict()
    statement = insert(FeedbackSummary).values(row)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["period_end"],
            set_={k: statement.excluded[k] for k in row if k != "period_end"},
        )
    )


def latest_feedback(session: Session) -> FeedbackSummary | None:
    return session.scalar(
        select(FeedbackSummary).order_by(FeedbackSummary.period_end.desc()).limit(1)
    )
