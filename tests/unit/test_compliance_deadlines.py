"""Statutory deadlines: GDPR's calendar month and the NZ Privacy Act's 20 working days."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from core.compliance.deadlines import (
    NZ,
    add_calendar_month,
    add_nz_working_days,
    gdpr_deadline,
    is_nz_working_day,
    nz_deadline,
)


def test_nz_deadline_skips_waitangi_day_and_weekends() -> None:
    # Received Monday 1 Feb 2027. Waitangi Day (Sat 6 Feb) is Mondayised to Mon 8 Feb, so
    # the working days run 2-5 Feb (4), 9-12 (8), 15-19 (13), 22-26 (18), 1-2 Mar (20).
    assert not is_nz_working_day(date(2027, 2, 8))
    assert add_nz_working_days(date(2027, 2, 1)) == date(2027, 3, 2)
    # 2026: Waitangi Day is Friday 6 Feb itself: 3-5 (3), 9-13 (8), ..., 2-3 Mar (20).
    assert not is_nz_working_day(date(2026, 2, 6))
    assert add_nz_working_days(date(2026, 2, 2)) == date(2026, 3, 3)


def test_nz_deadline_skips_easter_and_anzac_day_observed() -> None:
    # 2026: Good Friday 3 Apr, Easter Monday 6 Apr, Anzac Day Sat 25 Apr -> Mon 27 Apr.
    days = [date(2026, 4, d) for d in (3, 6, 27)]
    assert not any(is_nz_working_day(d) for d in days)
    # From Wed 1 Apr: 2 (1), 7-10 (5), 13-17 (10), 20-24 (15), 28-30 (18), 1 May (19),
    # Mon 4 May (20).
    assert add_nz_working_days(date(2026, 4, 1)) == date(2026, 5, 4)


def test_nz_christmas_to_mid_january_is_never_a_working_day() -> None:
    # Received Friday 18 Dec 2026: 21-24 Dec count (4); 25 Dec-15 Jan do not; then
    # Mon 18 Jan 2027 onward: 18-22 (9), 25-29 (14), 1-5 Feb (19), 9 Feb (20; 8 Feb is
    # Waitangi Day observed).
    assert not is_nz_working_day(date(2027, 1, 11))  # an ordinary Monday, but in the period
    assert add_nz_working_days(date(2026, 12, 18)) == date(2027, 2, 9)


def test_provincial_anniversary_days_are_working_days_under_the_act() -> None:
    # Auckland Anniversary Day 2027 is Monday 25 January: a working day for the Act.
    assert is_nz_working_day(date(2027, 1, 25))


def test_nz_deadline_is_the_end_of_the_day_in_new_zealand() -> None:
    received = datetime(2027, 1, 31, 20, 0, tzinfo=UTC)  # Monday 1 Feb 09:00 in Auckland
    deadline = nz_deadline(received)
    assert deadline == datetime(2027, 3, 3, 0, 0, tzinfo=NZ)  # the end of Tuesday 2 March


def test_gdpr_month_ends_on_the_same_date_or_the_last_day_of_a_shorter_month() -> None:
    assert add_calendar_month(date(2026, 3, 15)) == date(2026, 4, 15)
    assert add_calendar_month(date(2027, 1, 31)) == date(2027, 2, 28)
    assert add_calendar_month(date(2028, 1, 31)) == date(2028, 2, 29)
    assert add_calendar_month(date(2026, 12, 10)) == date(2027, 1, 10)
    zone = ZoneInfo("Europe/Berlin")
    received = datetime(2026, 3, 15, 23, 30, tzinfo=UTC)  # already 16 March in Berlin
    assert gdpr_deadline(received, zone) == datetime(2026, 4, 17, 0, 0, tzinfo=zone)
