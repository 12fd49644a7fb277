"""Failed logins with fail2ban's semantics, over the logins of every web node at once.

fail2ban counts a host's failures in its own log (fail2ban#881); here the auth events of all
nodes are in one table, so one set-based query finds, per IP, the first failure that makes
`maxretry` counted failures within `findtime`: the moment fail2ban would ban. On top of
fail2ban's jail:

- A failure that the same account follows, from the same IP within `findtime`, with a
  successful login is an honest typo and is not counted against the IP, as long as that
  account made fewer than `maxretry` failures there. A NAT address shared by many honest
  users is therefore never banned for their typos, while a brute force that finally gets in
  still is.
- An IP whose counted failures span `stuffing_accounts` or more accounts is credential
  stuffing (critical) rather than a brute force (warning); either way the IP is banned and
  the accounts are not.
- Per account: `account_maxretry` failures within `account_findtime` from at least
  `account_min_ips` addresses is a distributed attack, which no IP ban stops: the account is
  banned (the platform locks it or asks for a second factor) for `account_bantime`.
- Repeat offenders: `bantime * bantime_factor * 2^previous_bans` up to `bantime_maxtime`
  (bantime.increment), and `recidive.maxretry` bans within `recidive.findtime` earn
  `recidive.bantime` (the recidive jail).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.audit import audit
from core.security.findings import Finding, incident_event, record_findings
from models.config import EventopsConfig
from models.config_security import FailedLoginsConfig
from models.security import SecurityBan

DETECTOR = "failed_logins"


@dataclass(frozen=True)
class Crossing:
    """The failure at which a key reached the jail's limit."""

    value: str
    at: datetime
    event_id: int


def ip_crossings_sql(
    table: str = "security_events", forgive: bool = True, first_only: bool = False
) -> str:
    """The per-IP jail as one query: every failure at which an IP's jail is full.
    `forgive` adds the honest-typo rule; without it the query is fail2ban's plain
    maxretry-within-findtime. `first_only` keeps each IP's first (the benchmark's question:
    which IPs would be banned)."""
    events = f"""
        SELECT e.id, e.at, e.ip, e.account, e.kind
        FROM {table} AS e
        WHERE e.stream = 'auth' AND e.at > %(lo)s AND e.at <= %(until)s
          AND e.ip IS NOT NULL AND NOT (e.ip <<= ANY(%(ignore)s::cidr[]))
    """
    if forgive:
        counted = f"""
        marked AS (
            SELECT ev.*,
                   min(ev.at) FILTER (WHERE ev.kind = 'success') OVER (
                       PARTITION BY ev.ip, ev.account ORDER BY ev.at DESC, ev.id DESC
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS next_success
            FROM ({events} AND e.kind IN ('failure', 'success')) AS ev
        ),
        streaks AS (
            -- The failures of one IP and account before one success: a streak.
            SELECT marked.*, count(*) OVER (
                PARTITION BY ip, account, next_success) AS streak
            FROM marked WHERE kind = 'failure'
        ),
        counted AS (
            SELECT id, at, ip FROM streaks
            WHERE NOT (next_success IS NOT NULL AND next_success <= at + %(findtime)s
                       AND streak < %(maxretry)s)
        )"""
    else:
        counted = f"counted AS ({events} AND e.kind = 'failure')"
    return f"""
        WITH {counted},
        windowed AS (
            SELECT id, at, ip, count(*) OVER (
                PARTITION BY ip ORDER BY at RANGE BETWEEN %(findtime)s PRECEDING AND CURRENT ROW
            ) AS n
            FROM counted
        )
        SELECT {"DISTINCT ON (windowed.ip)" if first_only else ""} host(windowed.ip) AS ip, at, id
        FROM windowed
        WHERE n >= %(maxretry)s AND at > %(since)s
        ORDER BY windowed.ip, at, id
    """


def ip_crossings(
    session: Session,
    config: FailedLoginsConfig,
    since: datetime,
    until: datetime,
    forgive: bool = True,
    table: str = "security_events",
) -> list[Crossing]:
    """Per IP, each failure in (since, until] that fills its jail, in time order."""
    params = _params(config, since, until, config.findtime, config.maxretry)
    rows = session.connection().exec_driver_sql(ip_crossings_sql(table, forgive), params)
    return [Crossing(row[0], row[1], row[2]) for row in rows]


def _params(
    config: FailedLoginsConfig, since: datetime, until: datetime, findtime: timedelta, limit: int
) -> dict[str, Any]:
    # Failures up to findtime (and a typo's success window) before `since` still count.
    return {
        "lo": since - findtime,
        "since": since,
        "until": until,
        "findtime": findtime,
        "maxretry": limit,
        "ignore": list(config.ignoreip),
    }


def account_crossings(
    session: Session, config: FailedLoginsConfig, since: datetime, until: datetime
) -> list[tuple[Crossing, int]]:
    """Accounts whose failures fill the account jail from enough distinct IPs.

    The query narrows to accounts with `account_maxretry` failures in a window; the few it
    finds are then walked in time order to count distinct IPs (no window DISTINCT in SQL).
    """
    params = _params(config, since, until, config.account_findtime, config.account_maxretry)
    candidates = [
        row[0]
        for row in session.connection().exec_driver_sql(
            """
            WITH f AS (
                SELECT id, at, account FROM security_events AS e
                WHERE stream = 'auth' AND kind = 'failure' AND at > %(lo)s AND at <= %(until)s
                  AND (ip IS NULL OR NOT (ip <<= ANY(%(ignore)s::cidr[])))
            ), w AS (
                SELECT account, at, count(*) OVER (
                    PARTITION BY account ORDER BY at
                    RANGE BETWEEN %(findtime)s PRECEDING AND CURRENT ROW) AS n
                FROM f
            )
            SELECT DISTINCT account FROM w WHERE n >= %(maxretry)s AND at > %(since)s
            ORDER BY account
            """,
            params,
        )
    ]
    found: list[tuple[Crossing, int]] = []
    for account in candidates:
        rows = session.execute(
            text(
                """
                SELECT id, at, coalesce(host(ip), '') FROM security_events
                WHERE stream = 'auth' AND kind = 'failure' AND account = :account
                  AND at > :lo AND at <= :until
                  AND (ip IS NULL OR NOT (ip <<= ANY(CAST(:ignore AS cidr[]))))
                ORDER BY at, id
                """
            ),
            {"account": account, **params},
        ).all()
        window: deque[tuple[datetime, str]] = deque()
        for event_id, at, ip in rows:
            window.append((at, ip))
            while window[0][0] <= at - config.account_findtime:
                window.popleft()
            ips = {i for _, i in window}
            enough = len(window) >= config.account_maxretry and len(ips) >= config.account_min_ips
            if at > since and enough:
                found.append((Crossing(account, at, event_id), len(ips)))
                break
    return found


def _evidence_ip(
    session: Session, ip: str, start: datetime, at: datetime, until: datetime
) -> dict[str, Any]:
    row = session.execute(
        text(
            """
            SELECT count(*) FILTER (WHERE kind = 'failure' AND at <= :at) AS in_window,
                   count(DISTINCT account) FILTER (WHERE kind = 'failure' AND at <= :at)
                       AS accounts_in_window,
                   count(*) FILTER (WHERE kind = 'failure') AS failures,
                   count(*) FILTER (WHERE kind = 'success') AS successes,
                   count(DISTINCT account) FILTER (WHERE kind = 'failure') AS accounts,
                   (array_agg(DISTINCT account) FILTER (WHERE kind = 'failure'))[1:10]
                       AS sample_accounts,
                   (array_agg(DISTINCT user_agent) FILTER (WHERE kind = 'failure'))[1:3]
                       AS user_agents,
                   min(at) FILTER (WHERE kind = 'failure') AS first_failure,
                   max(at) FILTER (WHERE kind = 'failure') AS last_failure
            FROM security_events
            WHERE stream = 'auth' AND ip = CAST(:ip AS inet) AND at > :start AND at <= :until
            """
        ),
        {"ip": ip, "start": start, "at": at, "until": until},
    ).one()
    return dict(row._mapping)


def _ban_length(
    session: Session,
    config: FailedLoginsConfig,
    kind: str,
    value: str,
    at: datetime,
    base: timedelta,
) -> tuple[timedelta, int, str]:
    """(ban length, offence count, jail) for a new ban of `value` at `at`."""
    previous = session.scalars(
        select(SecurityBan.banned_at).where(
            SecurityBan.kind == kind,
            SecurityBan.value == value,
            SecurityBan.banned_at < at,
            SecurityBan.banned_at >= at - max(config.bantime_window, config.recidive.findtime),
        )
    ).all()
    in_increment = [b for b in previous if b >= at - config.bantime_window]
    in_recidive = [b for b in previous if b >= at - config.recidive.findtime]
    offence = len(in_increment) + 1
    if config.recidive.enabled and len(in_recidive) + 1 >= config.recidive.maxretry:
        return config.recidive.bantime, offence, "recidive"
    length = base
    if config.bantime_increment and in_increment:
        # In float seconds, capped before it becomes a timedelta: any positive factor is a
        # valid config, and timedelta * 1e300 is an OverflowError.
        seconds = base.total_seconds() * config.bantime_factor * 2 ** min(len(in_increment), 20)
        length = timedelta(seconds=min(seconds, config.bantime_maxtime.total_seconds()))
    return length, offence, DETECTOR


def is_banned(session: Session, kind: str, value: str, at: datetime) -> bool:
    return bool(
        session.scalar(
            select(func.count())
            .select_from(SecurityBan)
            .where(
                SecurityBan.kind == kind,
                SecurityBan.value == value,
                SecurityBan.lifted_at.is_(None),
                SecurityBan.banned_at <= at,
                SecurityBan.until > at,
            )
        )
    )


def ban(
    session: Session,
    app_config: EventopsConfig,
    finding: Finding,
    kind: str,
    value: str,
    at: datetime,
    base: timedelta,
    now: datetime,
) -> int | None:
    """Record the finding, ban `value` from `at`, and put the ban on the incident's
    timeline with its evidence. None when it was banned already (a re-run, or an offender
    still inside its ban)."""
    config = app_config.security.failed_logins
    if is_banned(session, kind, value, at):
        return None
    length, offence, jail = _ban_length(session, config, kind, value, at, base)
    if jail == "recidive":
        finding.kind = "recidive"
        finding.summary += f"; banned {offence} times recently: recidive ban"
    finding.evidence.update(ban_length_s=length.total_seconds(), offence_count=offence)
    ((finding_id, _),) = record_findings(session, [finding], app_config, now)
    from models.security import SecurityFinding

    incident_id = session.scalar(
        select(SecurityFinding.incident_id).where(SecurityFinding.id == finding_id)
    )
    ban_id = session.scalar(
        insert(SecurityBan)
        .values(
            kind=kind,
            value=value,
            jail=jail,
            reason=finding.summary,
            evidence=_json(finding.evidence),
            banned_at=at,
            until=at + length,
            offence_count=offence,
            finding_id=finding_id,
            incident_id=incident_id,
            webhook_state="pending" if config.webhook_url else None,
        )
        .on_conflict_do_nothing(constraint="uq_security_bans_natural_key")
        .returning(SecurityBan.id)
    )
    if ban_id is not None:
        # A ban is an action of eventops itself: it goes on the audit chain too.
        audit(
            session,
            "eventops",
            "security.ban",
            f"{kind}:{value}",
            {"ban_id": ban_id, "jail": jail, "until": (at + length).isoformat()},
            at=now,
        )
    if ban_id is not None and incident_id is not None:
        incident_event(
            session,
            incident_id,
            now,
            "ban",
            {
                "ban_id": ban_id,
                "kind": kind,
                "value": value,
                "until": at + length,
                "jail": jail,
                "offence_count": offence,
                **finding.evidence,
            },
        )
    return ban_id


def _json(evidence: dict[str, Any]) -> dict[str, Any]:
    from core.security.findings import jsonable

    result: dict[str, Any] = jsonable(evidence)
    return result


def detect(
    session: Session, app_config: EventopsConfig, since: datetime, until: datetime, now: datetime
) -> dict[str, Any]:
    """Judge the logins in (since, until]: ban IPs and accounts, write findings."""
    config = app_config.security.failed_logins
    bans: list[int] = []
    findtime = config.findtime
    for crossing in ip_crossings(session, config, since, until):
        # Failures of a banned IP are not counted again until its ban ends (fail2ban too).
        if is_banned(session, "ip", crossing.value, crossing.at):
            continue
        evidence = _evidence_ip(session, crossing.value, crossing.at - findtime, crossing.at, until)
        stuffing = evidence["accounts_in_window"] >= config.stuffing_accounts
        kind = "credential_stuffing" if stuffing else "brute_force"
        what = (
            f"{evidence['accounts_in_window']} accounts"
            if stuffing
            else f"account {(evidence['sample_accounts'] or ['?'])[0]}"
        )
        finding = Finding(
            detector=DETECTOR,
            kind=kind,
            severity="critical" if stuffing else "warning",
            subject=f"ip:{crossing.value}",
            summary=(
                f"{kind.replace('_', ' ')}: {evidence['in_window']} failed logins on {what} from "
                f"{crossing.value} within {_minutes(findtime)}; IP banned"
            ),
            window_start=crossing.at - findtime,
            window_end=crossing.at,
            evidence={
                "ip": crossing.value,
                "crossed_at": crossing.at,
                "event_id": crossing.event_id,
                "maxretry": config.maxretry,
                "findtime_s": findtime.total_seconds(),
                **evidence,
            },
        )
        if (
            ban_id := ban(
                session, app_config, finding, "ip", crossing.value, crossing.at, config.bantime, now
            )
        ) is not None:
            bans.append(ban_id)
    for crossing, ips in account_crossings(session, config, since, until):
        finding = Finding(
            detector=DETECTOR,
            kind="distributed_attack",
            severity="critical",
            subject=f"account:{crossing.value}",
            summary=(
                f"distributed attack: {config.account_maxretry}+ failed logins on "
                f"{crossing.value} from {ips} IPs within {_minutes(config.account_findtime)}; "
                "account locked"
            ),
            window_start=crossing.at - config.account_findtime,
            window_end=crossing.at,
            evidence={
                "account": crossing.value,
                "crossed_at": crossing.at,
                "distinct_ips": ips,
                "account_maxretry": config.account_maxretry,
                **_evidence_account(
                    session, crossing.value, crossing.at - config.account_findtime, until
                ),
            },
        )
        if (
            ban_id := ban(
                session,
                app_config,
                finding,
                "account",
                crossing.value,
                crossing.at,
                config.account_bantime,
                now,
            )
        ) is not None:
            bans.append(ban_id)
    return {"bans": len(bans)}


def _evidence_account(
    session: Session, account: str, start: datetime, until: datetime
) -> dict[str, Any]:
    row = session.execute(
        text(
            """
            SELECT count(*) AS failures,
                   (array_agg(DISTINCT host(ip)))[1:20] AS sample_ips,
                   min(at) AS first_failure, max(at) AS last_failure
            FROM security_events
            WHERE stream = 'auth' AND kind = 'failure' AND account = :account
              AND at > :start AND at <= :until
            """
        ),
        {"account": account, "start": start, "until": until},
    ).one()
    return dict(row._mapping)


def _minutes(duration: timedelta) -> str:
    minutes = duration.total_seconds() / 60
    return f"{minutes:g} min" if minutes < 120 else f"{minutes / 60:g} h"
