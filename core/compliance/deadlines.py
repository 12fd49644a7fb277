"""Statutory deadlines for data subject requests: GDPR's month and New Zealand's working days.

GDPR art. 12(3): reply "within one month of receipt". Periods in months follow Regulation
1182/71 art. 3(2)(c): the period ends on the same date in the next month, or on that month's
last day when it has no such date (31 January -> 28/29 February); the deadline is the end of
that day.

NZ Privacy Act 2020 s 44: decide an access request "as soon as is reasonably practicable,
and in any case not later than 20 working days after the day on which the request is
received". Its s 7 defines a working day as any day other than a Saturday or Sunday, Good
Friday, Easter Monday, Anzac Day, the Sovereign's birthday, Matariki, Labour Day and Waitangi
Day (Waitangi and Anzac Day moved to the Monday when they fall on a weekend), and any day from
25 December to 15 January. The national holidays come from the `holidays` package (country NZ,
no province: provincial anniversary days are working days under the Act); the summer period
is applied here, which also covers Christmas, Boxing Day and the New Year holidays and their
Mondayised days. The day of receipt is not counted; the deadline is the end of the 20th
working day after it, in New Zealand time.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

NZ = ZoneInfo("Pacific/Auckland")
NZ_WORKING_DAYS = 20
# The Christmas-New Year period that is never a working day: (month, day) to (month, day).
SUMMER_START = (12, 25)
SUMMER_END = (1, 15)


@lru_cache(maxsize=64)
def _nz_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("NZ", years=year).keys())


def in_summer_period(day: date, end: tuple[int, int] = SUMMER_END) -> bool:
    return (day.month, day.day) >= SUMMER_START or (day.month, day.day) <= end


def is_nz_working_day(day: date, summer_end: tuple[int, int] = SUMMER_END) -> bool:
    """A working day in the Privacy Act 2020's sense."""
    if day.weekday() >= 5:
        return False
    if in_summer_period(day, summer_end):
        return False
    return day not in _nz_holidays(day.year)


def add_nz_working_days(
    received: date, count: int = NZ_WORKING_DAYS, summer_end: tuple[int, int] = SUMMER_END
) -> date:
    """The `count`-th working day after the day of receipt (which itself is not counted)."""
    day, left = received, count
    while left > 0:
        day += timedelta(days=1)
        if is_nz_working_day(day, summer_end):
            left -= 1
    return day


def add_calendar_month(received: date, months: int = 1) -> date:
    """The same date `months` later, or that month's last day when it has no such date."""
    month_index = received.month - 1 + months
    year, month = received.year + month_index // 12, month_index % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return date(year, month, min(received.day, last))


def end_of_day(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)


def gdpr_deadline(received_at: datetime, zone: ZoneInfo) -> datetime:
    """End of the day one calendar month after receipt, in the controller's time zone."""
    return end_of_day(add_calendar_month(received_at.astimezone(zone).date()), zone)


def nz_deadline(received_at: datetime, summer_end: tuple[int, int] = SUMMER_END) -> datetime:
    """End of the 20th NZ working day after the day of receipt, New Zealand time."""
    received = received_at.astimezone(NZ).date()
    return end_of_day(add_nz_working_days(received, NZ_WORKING_DAYS, summer_end), NZ)


def deadline_for(
    regime: str, received_at: datetime, zone: ZoneInfo, summer_end: tuple[int, int] = SUMMER_END
) -> datetime:
    if regime == "gdpr":
        return gdpr_deadline(received_at, zone)
    if regime == "nz":
        return nz_deadline(received_at, summer_end)
    raise ValueError(f"unknown regime {regime!r} (nz or gdpr)")
