"""Data breach detection on the platform's data access log (and its logins):

- access outside a role's permissions (config: role -> table -> actions), critical;
- bulk reads far above the actor's own baseline (EWMA and z-score per hour), critical;
- access at unusual hours (outside working hours in the platform's time zone) by watched
  roles, warning;
- logins of watched roles from a network (/16, /48) or country never seen for the account,
  warning.
"""

from __future__ import annotations

import json
from datetime import datetime, time
from typing import Any

from sqlalchemy.orm import Session

from core.security.findings import Finding, judge_buckets, merge_by_window, record_findings
from models.config import EventopsConfig

DETECTOR = "data_access"
EPOCH = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"

_OUTSIDE_PERMISSIONS = f"""
    SELECT account, role, resource, kind AS action,
           date_bin(%(bucket)s, at, {EPOCH}) AS b,
           count(*) AS accesses, sum(rows) AS rows, min(at) AS first_at, max(at) AS last_at
    FROM security_events
    WHERE stream = 'access' AND at >= %(since)s AND at < %(until)s
      AND role IS NOT NULL AND %(permissions)s::jsonb ? role
      AND NOT coalesce((%(permissions)s::jsonb -> role -> resource) ? kind, false)
      AND NOT coalesce((%(permissions)s::jsonb -> role -> resource) ? '*', false)
      AND NOT coalesce((%(permissions)s::jsonb -> role -> '*') ? kind, false)
      AND NOT coalesce((%(permissions)s::jsonb -> role -> '*') ? '*', false)
    GROUP BY account, role, resource, kind, b
    ORDER BY b, account
"""

_VOLUME = f"""
    SELECT account, date_bin(%(bucket)s, at, {EPOCH}) AS b, sum(rows) AS rows,
           max(role) AS role,
           jsonb_object_agg(resource || ':' || kind, 1) AS what,
           min(at) AS first_at, max(at) AS last_at
    FROM security_events
    WHERE stream = 'access' AND at >= %(since)s AND at < %(until)s
    GROUP BY account, b ORDER BY b, account
"""

_UNUSUAL_HOURS = f"""
    SELECT account, max(role) AS role, date_bin(%(bucket)s, at, {EPOCH}) AS b,
           count(*) AS accesses, sum(rows) AS rows,
           min(at) AS first_at, max(at) AS last_at,
           min((at AT TIME ZONE %(tz)s)::time) AS local_first
    FROM security_events
    WHERE stream = 'access' AND at >= %(since)s AND at < %(until)s
      AND role = ANY(%(roles)s)
      AND NOT ((at AT TIME ZONE %(tz)s)::time >= %(start)s
               AND (at AT TIME ZONE %(tz)s)::time < %(end)s)
    GROUP BY account, b
    HAVING count(*) >= %(min)s
    ORDER BY b, account
"""

# A watched role's successful login from a network or country the account never used before.
_NEW_NETWORK = """
    SELECT e.account, e.role, host(e.ip) AS ip, e.country, e.at,
           network(set_masklen(e.ip, CASE WHEN family(e.ip) = 4 THEN %(v4)s ELSE %(v6)s END))
               AS net,
           NOT EXISTS (
               SELECT 1 FROM security_events AS p
               WHERE p.stream = 'auth' AND p.kind = 'success' AND p.account = e.account
                 AND p.at < e.at AND p.ip IS NOT NULL
                 AND p.ip <<= network(set_masklen(
                     e.ip, CASE WHEN family(e.ip) = 4 THEN %(v4)s ELSE %(v6)s END))
           ) AS new_network,
           e.country IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM security_events AS p
               WHERE p.stream = 'auth' AND p.kind = 'success' AND p.account = e.account
                 AND p.at < e.at AND p.country = e.country
           ) AS new_country
    FROM security_events AS e
    WHERE e.stream = 'auth' AND e.kind = 'success' AND e.at >= %(since)s AND e.at < %(until)s
      AND e.role = ANY(%(roles)s) AND e.ip IS NOT NULL
      -- Nothing to compare with on an account's first login.
      AND EXISTS (SELECT 1 FROM security_events AS p
                  WHERE p.stream = 'auth' AND p.kind = 'success' AND p.account = e.account
                    AND p.at < e.at)
    ORDER BY e.at
"""


def _hhmm(text: str) -> time:
    hours, minutes = (int(p) for p in text.split(":"))
    return time(23, 59, 59, 999999) if hours == 24 else time(hours, minutes)


def detect(
    session: Session, app_config: EventopsConfig, since: datetime, until: datetime, now: datetime
) -> dict[str, Any]:
    """Judge the whole buckets in [since, until)."""
    config = app_config.security.data_access
    conn = session.connection()
    hours = f"{config.bucket.total_seconds() / 3600:g} h"
    base = {"bucket": config.bucket, "since": since, "until": until}
    findings: list[Finding] = []

    if config.permissions:
        for r in conn.exec_driver_sql(
            _OUTSIDE_PERMISSIONS, {**base, "permissions": json.dumps(config.permissions)}
        ):
            findings.append(
                Finding(
                    detector=DETECTOR,
                    kind="outside_permissions",
                    severity="critical",
                    breach=True,
                    subject=f"account:{r.account}",
                    summary=f"{r.role} {r.account} did {r.action} on {r.resource} "
                    f"{r.accesses} times ({r.rows} rows): not allowed for role {r.role}",
                    window_start=r.b,
                    window_end=r.b + config.bucket,
                    evidence={
                        "role": r.role,
                        "table": r.resource,
                        "action": r.action,
                        "accesses": r.accesses,
                        "rows": r.rows,
                        "first_at": r.first_at,
                        "last_at": r.last_at,
                    },
                )
            )

    volumes = list(conn.exec_driver_sql(_VOLUME, base))
    by_key = {(f"account:{r.account}", r.b): r for r in volumes}
    flagged = judge_buckets(
        session,
        "access_volume",
        [(f"account:{r.account}", r.b, float(r.rows)) for r in volumes],
        config.bucket,
        config.ewma_alpha,
        config.z_threshold,
        config.min_rows,
        config.min_stddev,
        config.warmup_buckets,
        config.new_actor_rows,
    )
    for key, bucket, value, mean, z in flagged:
        r = by_key[(key, bucket)]
        findings.append(
            Finding(
                detector=DETECTOR,
                kind="bulk_read",
                severity="critical",
                breach=True,
                subject=key,
                summary=f"{r.role or 'user'} {r.account} touched {value:.0f} rows in {hours} "
                f"(baseline {mean:.1f}, z={z:.1f}): {', '.join(sorted(r.what))}",
                window_start=bucket,
                window_end=bucket + config.bucket,
                evidence={
                    "rows": value,
                    "baseline_mean": mean,
                    "z": z,
                    "role": r.role,
                    "what": sorted(r.what),
                    "first_at": r.first_at,
                    "last_at": r.last_at,
                },
            )
        )

    start, end = config.working_hours.split("-")
    if config.unusual_hours_roles:
        for r in conn.exec_driver_sql(
            _UNUSUAL_HOURS,
            {
                **base,
                "tz": app_config.timezone,
                "roles": list(config.unusual_hours_roles),
                "start": _hhmm(start),
                "end": _hhmm(end),
                "min": config.unusual_hours_min,
            },
        ):
            findings.append(
                Finding(
                    detector=DETECTOR,
                    kind="unusual_hours",
                    severity="warning",
                    subject=f"account:{r.account}",
                    summary=f"{r.role} {r.account}: {r.accesses} accesses ({r.rows} rows) at "
                    f"{r.local_first:%H:%M} {app_config.timezone} time, outside working hours "
                    f"{config.working_hours}",
                    window_start=r.b,
                    window_end=r.b + config.bucket,
                    evidence={
                        "role": r.role,
                        "accesses": r.accesses,
                        "rows": r.rows,
                        "first_at": r.first_at,
                        "last_at": r.last_at,
                        "working_hours": config.working_hours,
                    },
                )
            )

    if config.new_network_roles:
        for r in conn.exec_driver_sql(
            _NEW_NETWORK,
            {
                "since": since,
                "until": until,
                "roles": list(config.new_network_roles),
                "v4": config.network_prefix_v4,
                "v6": config.network_prefix_v6,
            },
        ):
            if not (r.new_network or r.new_country):
                continue
            what = " and ".join(
                w
                for w, new in (
                    (f"network {r.net}", r.new_network),
                    (f"country {r.country}", r.new_country),
                )
                if new
            )
            findings.append(
                Finding(
                    detector=DETECTOR,
                    kind="new_network",
                    severity="warning",
                    subject=f"account:{r.account}",
                    summary=f"{r.role} {r.account} logged in from a new {what} ({r.ip})",
                    window_start=r.at,
                    window_end=r.at,
                    evidence={
                        "role": r.role,
                        "ip": r.ip,
                        "network": str(r.net),
                        "country": r.country,
                        "new_network": r.new_network,
                        "new_country": r.new_country,
                    },
                )
            )
    results = record_findings(session, merge_by_window(findings), app_config, now)
    return {"findings": sum(1 for _, new in results if new)}
