"""The performance metrics review: per check, response times and uptime over a day or a week
from the rollups, compared with the period before, stored and returned as Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.rollups import Figures, watermarks, window_figures
from models.rollups import PerformanceReview
from models.tables import Check

Period = Literal["daily", "weekly"]
LENGTH: dict[str, timedelta] = {"daily": timedelta(days=1), "weekly": timedelta(days=7)}
# What makes a check worth a line under "Needs attention".
UPTIME_TARGET = 0.999
P95_WORSE_BY = 0.2
_US = timedelta(microseconds=1)


def last_complete_period(period: Period, now: datetime) -> datetime:
    """The start of the newest whole period before now: yesterday, or last ISO week
    (Monday to Sunday), in UTC."""
    if period not in LENGTH:
        raise ValueError(f"period: must be 'daily' or 'weekly', not {period!r}")
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return today - timedelta(days=1)
    this_week = today - timedelta(days=today.weekday())
    return this_week - timedelta(days=7)


@dataclass(frozen=True)
class CheckReview:
    name: str
    now: Figures
    before: Figures

    def to_json(self) -> dict[str, Any]:
        return {
            "probes": self.now.probes,
            "down": self.now.down,
            "uptime": self.now.uptime,
            "avg_ms": self.now.latency_avg,
            "p95_ms": self.now.percentile(0.95),
            "p99_ms": self.now.percentile(0.99),
            "max_ms": self.now.latency_max,
            "previous_uptime": self.before.uptime,
            "previous_p95_ms": self.before.percentile(0.95),
        }

    def concerns(self) -> list[str]:
        found = []
        if self.now.uptime is not None and self.now.uptime < UPTIME_TARGET:
            found.append(f"uptime {_percent(self.now.uptime)} below {_percent(UPTIME_TARGET)}")
        p95, before = self.now.percentile(0.95), self.before.percentile(0.95)
        if p95 is not None and before and p95 > before * (1 + P95_WORSE_BY):
            found.append(f"p95 {_ms(p95)} up {(p95 / before - 1) * 100:.0f}% from {_ms(before)}")
        return found


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _change(now: float | None, before: float | None, unit: str) -> str:
    if now is None or before is None:
        return "-"
    if unit == "pp":
        return f"{(now - before) * 100:+.2f} pp"
    if not before:
        return "-"
    return f"{(now / before - 1) * 100:+.0f}%"


def render(
    period: Period,
    start: datetime,
    reviews: list[CheckReview],
    covered_until: datetime | None,
) -> str:
    end = start + LENGTH[period]
    title = "Daily" if period == "daily" else "Weekly"
    unit = "day" if period == "daily" else "week"
    lines = [
        f"# {title} performance review: {start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d}"
        " (UTC)",
        "",
        f"Response times and uptime per check from {start:%Y-%m-%d %H:%M} to "
        f"{end:%Y-%m-%d %H:%M} UTC, compared with the {unit} before. Percentiles come "
        "from the rollups' latency histograms (within 5%).",
        "",
    ]
    if covered_until is None or covered_until < end:
        lines += [
            "> The hourly rollups do not reach the end of the period yet; the rest was read "
            "from minute rollups and raw outcomes.",
            "",
        ]
    if not reviews:
        return "\n".join([*lines, "No outcomes in this period.", ""])
    attention = [(r.name, c) for r in reviews for c in r.concerns()]
    lines += ["## Needs attention", ""]
    lines += [f"- `{name}`: {concern}" for name, concern in attention] or ["Nothing stands out."]
    lines += [
        "",
        "## Per check",
        "",
        "| check | probes | down | uptime | Δ uptime | avg | p95 | Δ p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reviews:
        f, b = r.now, r.before
        lines.append(
            f"| `{r.name}` | {f.probes} | {f.down} | {_percent(f.uptime)} | "
            f"{_change(f.uptime, b.uptime, 'pp')} | {_ms(f.latency_avg)} | "
            f"{_ms(f.percentile(0.95))} | "
            f"{_change(f.percentile(0.95), b.percentile(0.95), '%')} | "
            f"{_ms(f.percentile(0.99))} | {_ms(f.latency_max)} |"
        )
    return "\n".join([*lines, ""])


def performance_review(
    session: Session,
    period: Period,
    start: datetime | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write (or rewrite: the (period, start) row is the key) the review of the period
    starting at `start` (default: the last complete one) and return {"id", "period",
    "period_start", "checks", "attention", "report"}."""
    now = now or utcnow()
    start = start or last_complete_period(period, now)
    length = LENGTH[period]
    end = start + length
    # Windows are (since, until]; slots in [start, end) are (start - 1us, end - 1us].
    current = window_figures(session, None, start - _US, end - _US)
    previous = window_figures(session, None, start - length - _US, start - _US)
    names = dict(session.execute(select(Check.id, Check.name)).all())
    reviews = sorted(
        (
            CheckReview(
                names.get(check_id, f"check {check_id}"), figures, previous.get(check_id, Figures())
            )
            for check_id, figures in current.items()
        ),
        key=lambda r: r.name,
    )
    report = render(period, start, reviews, watermarks(session).get("hour"))
    figures = {r.name: r.to_json() for r in reviews}
    row_id = session.execute(
        insert(PerformanceReview)
        .values(
            period=period,
            period_start=start,
            period_end=end,
            created_at=now,
            report=report,
            figures=figures,
        )
        .on_conflict_do_update(
            constraint="uq_performance_reviews_period",
            set_={"created_at": now, "report": report, "figures": figures, "period_end": end},
        )
        .returning(PerformanceReview.id)
    ).scalar_one()
    return {
        "id": row_id,
        "period": period,
        "period_start": start.isoformat(),
        "checks": len(reviews),
        "attention": sum(len(r.concerns()) for r in reviews),
        "report": report,
    }
