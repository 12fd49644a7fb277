"""What the dashboard shows of platform insight: KPIs against targets, Web Vitals p75 against
thresholds, and live activity from the platform database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy.orm import Session

from core.backups.tools import Conn
from core.insight import platform
from core.insight.kpis import latest_kpis, period_bounds
from core.insight.vitals import p75_by_page
from models.config import EventopsConfig

_ACTIVITY = """
SELECT
    (SELECT count(*) FROM auth_events
     WHERE kind = 'login_success' AND at > %(hour_ago)s AND at <= %(now)s),
    (SELECT count(DISTINCT user_id) FROM auth_events
     WHERE kind = 'login_success' AND at >= %(today)s AND at <= %(now)s),
    (SELECT count(*) FROM bookings WHERE created_at >= %(today)s AND created_at <= %(now)s)
"""


def _platform_url() -> str | None:
    from workers.settings import get_settings

    url = get_settings().platform_database_url
    return url.get_secret_value() if url is not None else None


def activity(platform_url: str | None, timezone: str, now: datetime) -> dict[str, Any]:
    """Logins in the last hour, distinct users who logged in today and bookings made today
    ("today" in the config's time zone). Empty without a platform database; `error` when it
    cannot be read, so the dashboard still renders."""
    if not platform_url:
        return {}
    today, _ = period_bounds("day", now, timezone)
    params = {"hour_ago": now - timedelta(hours=1), "today": today, "now": now}
    try:
        with platform.connect(Conn.from_url(platform_url)) as db:
            found = platform.rows(db, _ACTIVITY, params)
    except psycopg.Error as error:
        return {"error": str(error).strip().splitlines()[0]}
    logins, active, bookings = found[0]
    return {
        "logins_last_hour": int(logins),
        "active_users_today": int(active),
        "bookings_today": int(bookings),
    }


def dashboard_summary(
    session: Session,
    config: EventopsConfig,
    now: datetime,
    *,
    platform_url: str | bool | None = True,
) -> dict[str, Any]:
    """{"kpis": [{name, value, target, period, ok}], "vitals": [{page, device, metric, p75,
    threshold, ok}], "activity": {logins_last_hour, active_users_today, bookings_today}}.

    KPIs come in config order (their newest stored values); vitals are p75 over the config's
    rolling window ending `now`, with the config's `min_samples`. `platform_url` True reads
    EVENTOPS_PLATFORM_DATABASE_URL; None or False leaves `activity` empty.
    """
    names = [k.name for k in config.insight.kpis]
    kpis = [
        {
            "name": r.name,
            "value": r.value,
            "target": r.target,
            "expected": r.expected,
            "period": r.period,
            "ok": r.ok,
        }
        for r in latest_kpis(session, names or None)
    ]
    vitals_config = config.insight.vitals
    vitals = [
        {
            "page": v.page,
            "device": v.device,
            "metric": v.metric,
            "p75": v.p75,
            "threshold": v.threshold,
            "ok": v.ok,
            "samples": v.samples,
        }
        for v in p75_by_page(
            session,
            now - vitals_config.window,
            now,
            dict(vitals_config.thresholds),
            vitals_config.min_samples,
        )
    ]
    url = _platform_url() if platform_url is True else (platform_url or None)
    return {
        "kpis": kpis,
        "vitals": vitals,
        "activity": activity(url, config.timezone, now),
    }
