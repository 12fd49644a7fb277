"""Silences and maintenance windows: they hold pages back; incidents still open and resolve."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.audit import audit
from core.clock import utcnow
from models.config import EventopsConfig, WeeklyWindow, parse_matcher
from models.tables import Escalation, Silence

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def matches(matchers: Sequence[str], labels: dict[str, str]) -> bool:
    """Alertmanager's matcher semantics: every matcher must hold; a missing label is ''."""
    for matcher in matchers:
        label, op, value = parse_matcher(matcher)
        actual = labels.get(label, "")
        if op == "=" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
        if op == "=~" and not re.fullmatch(value, actual):
            return False
        if op == "!~" and re.fullmatch(value, actual):
            return False
    return True


def window_span(window: WeeklyWindow, at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The occurrence of a weekly window that contains `at` or starts next."""
    local = at.astimezone(zone)
    hour, minute = (int(part) for part in window.start.split(":"))
    days_back = (local.weekday() - DAYS.index(window.day)) % 7
    start_date = local.date() - timedelta(days=days_back)
    start = datetime.combine(start_date, time(hour, minute), tzinfo=zone)
    if start + window.duration <= local:
        start = datetime.combine(start_date + timedelta(days=7), time(hour, minute), tzinfo=zone)
    return start.astimezone(at.tzinfo), (start + window.duration).astimezone(at.tzinfo)


def muted_until(
    session: Session, labels: dict[str, str], config: EventopsConfig, now: datetime
) -> datetime | None:
    """When the latest silence or maintenance window covering these labels ends; None if
    nothing covers them now."""
    ends: list[datetime] = []
    active = session.scalars(
        select(Silence).where(Silence.starts_at <= now, Silence.ends_at > now)
    ).all()
    ends += [s.ends_at for s in active if matches(s.matchers, labels)]
    zone = ZoneInfo(config.timezone)
    for window in config.maintenance_windows:
        start, end = window_span(window, now, zone)
        if start <= now < end and matches(window.matchers, labels):
            ends.append(end)
    return max(ends) if ends else None


def create_silence(
    session: Session,
    matchers: Sequence[str],
    *,
    by: str,
    comment: str = "",
    duration: timedelta | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    now: datetime | None = None,
) -> Silence:
    """Mute pages for incidents matching every matcher (`check=stripe`, `group=~pay.*`)."""
    now = now or utcnow()
    for matcher in matchers:
        parse_matcher(matcher)  # a bad matcher is a ValueError naming it, before anything is stored
    starts_at = starts_at or now
    if ends_at is None:
        if duration is None:
            raise ValueError("a silence needs an end: give duration or ends_at")
        ends_at = starts_at + duration
    if ends_at <= starts_at:
        raise ValueError("a silence must end after it starts")
    silence = Silence(
        matchers=list(matchers),
        starts_at=starts_at,
        ends_at=ends_at,
        created_by=by,
        comment=comment,
        created_at=now,
    )
    session.add(silence)
    session.flush()
    audit(
        session,
        by,
        "silence.create",
        f"silence:{silence.id}",
        {"matchers": list(matchers), "ends_at": ends_at.isoformat(), "comment": comment},
        at=now,
    )
    return silence


def expire_silence(
    session: Session, silence_id: int, now: datetime | None = None, *, by: str = "eventops"
) -> bool:
    """End a silence now. Pages it held (due at its old end) become due at once; the sweeper
    re-checks them against any other silence still covering them."""
    now = now or utcnow()
    old_end = session.scalar(
        select(Silence.ends_at).where(Silence.id == silence_id, Silence.ends_at > now)
    )
    if old_end is None:
        return False
    session.execute(update(Silence).where(Silence.id == silence_id).values(ends_at=now))
    session.execute(
        update(Escalation)
        .where(Escalation.state == "pending", Escalation.due_at == old_end)
        .values(due_at=now)
    )
    audit(session, by, "silence.expire", f"silence:{silence_id}", at=now)
    return True


@contextmanager
def silenced(
    matchers: Sequence[str], *, by: str, comment: str, longest: timedelta = timedelta(hours=4)
) -> Iterator[int]:
    """Mute what a maintenance job touches while it runs, and unmute it when it ends, even when
    it fails. `longest` bounds the silence if the process dies before it can end it."""
    from models.db import session_scope

    with session_scope() as session:
        silence_id = create_silence(session, matchers, by=by, comment=comment, duration=longest).id
    try:
        yield silence_id
    finally:
        with session_scope() as session:
            expire_silence(session, silence_id)
