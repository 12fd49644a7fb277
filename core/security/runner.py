"""One security tick: read new events from every source, run each detector over the window
since its last run, deliver ban webhooks, prune old events. Also unban."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session

from core.backups.tools import Conn
from core.incidents import add_event
from core.security import api_abuse, data_access, failed_logins, signatures
from core.security.findings import detector_window, jsonable, set_cursor
from core.security.sources import ingest
from models.config import EventopsConfig
from models.db import affected
from models.security import SecurityBan, SecurityEvent

log = logging.getLogger(__name__)

Detect = Callable[[Session, EventopsConfig, datetime, datetime, datetime], dict[str, Any]]

WEBHOOK_ATTEMPTS = 5


def detectors(config: EventopsConfig) -> dict[str, tuple[Detect, timedelta | None, bool]]:
    """name -> (detect, bucket or None for event-time windows, enabled)."""
    security = config.security
    return {
        failed_logins.DETECTOR: (failed_logins.detect, None, security.failed_logins.enabled),
        api_abuse.DETECTOR: (
            api_abuse.detect,
            security.api_abuse.bucket,
            security.api_abuse.enabled,
        ),
        data_access.DETECTOR: (
            data_access.detect,
            security.data_access.bucket,
            security.data_access.enabled,
        ),
        signatures.DETECTOR: (
            signatures.detect,
            security.signatures.bucket,
            security.signatures.enabled,
        ),
    }


def run_detector(
    session: Session,
    config: EventopsConfig,
    name: str,
    now: datetime,
    since: datetime | None = None,
    cap: datetime | None = None,
) -> dict[str, Any]:
    """Run one detector over the window since its last run (or from `since`), up to `cap`
    at most, then move its mark. A re-run over the same window finds the same findings and
    adds none."""
    table = detectors(config)
    if name not in table:
        raise KeyError(f"unknown detector {name!r} (known: {', '.join(table)})")
    detect, bucket, _ = table[name]
    security = config.security
    start, until = detector_window(
        session, name, now, security.settle, security.first_lookback, bucket, cap
    )
    if since is not None:
        start = since
    if until <= start:
        return {"window": None}
    summary = detect(session, config, start, until, now)
    set_cursor(session, f"detector:{name}", until.isoformat(), now)
    return {"since": start.isoformat(), "until": until.isoformat(), **summary}


def tick(
    session_factory: Callable[[], Any],
    config: EventopsConfig,
    platform: Conn | None,
    now: datetime,
    max_rounds: int = 10,
) -> dict[str, Any]:
    """Ingest, detect, notify, prune; each step in a transaction of its own so one failing
    detector does not hold back the others.

    Sources are read batch after batch (up to `max_rounds`) until they are caught up. One
    still behind after that caps every detector's window at the newest event it has read,
    so no window is closed before its events are in: the next ticks catch up and judge the
    rest.
    """
    security = config.security
    if not security.enabled:
        return {"skipped": "security is disabled in the config"}
    summary: dict[str, Any] = {}
    sources = list(security.sources)
    read: dict[str, dict[str, Any]] = {}
    for _ in range(max_rounds):
        with session_factory() as session:
            batch = ingest(session, sources, platform, now)
        for name, result in batch.items():
            total = read.setdefault(name, {"read": 0, "stored": 0})
            for key, value in result.items():
                total[key] = total.get(key, 0) + value if key in ("read", "stored") else value
            if not result.get("behind"):
                total.pop("behind", None)
                total.pop("up_to", None)
        sources = [s for s in sources if batch.get(s.name, {}).get("behind")]
        if not sources:
            break
    summary["sources"] = read
    lagging = [s["up_to"] for s in read.values() if s.get("behind") and s.get("up_to")]
    cap = min(datetime.fromisoformat(at) for at in lagging) if lagging else None
    for name, (_, _, enabled) in detectors(config).items():
        if not enabled:
            continue
        with session_factory() as session:
            summary[name] = run_detector(session, config, name, now, cap=cap)
    summary["webhooks"] = deliver_webhooks(session_factory, config)
    with session_factory() as session:
        summary["pruned"] = prune(session, now - security.keep_events)
    return summary


def prune(session: Session, before: datetime) -> int:
    """Drop events older than `before`, stream by stream so the (stream, at) index is used."""
    pruned = 0
    for stream in ("auth", "api", "access"):
        result = session.execute(
            delete(SecurityEvent).where(SecurityEvent.stream == stream, SecurityEvent.at < before)
        )
        pruned += affected(result)
    return pruned


def ban_payload(ban: SecurityBan, event: str) -> dict[str, Any]:
    payload: dict[str, Any] = jsonable(
        {
            "event": event,
            "id": ban.id,
            "kind": ban.kind,
            "value": ban.value,
            "jail": ban.jail,
            "reason": ban.reason,
            "banned_at": ban.banned_at,
            "until": ban.until,
            "offence_count": ban.offence_count,
            "lifted_at": ban.lifted_at,
            "evidence": ban.evidence,
        }
    )
    return payload


# pg_try_advisory_lock key of ban webhook delivery ("BANW" in ASCII).
WEBHOOK_LOCK = 0x42414E57


def deliver_webhooks(
    session_factory: Callable[[], Any], config: EventopsConfig, limit: int = 50
) -> dict[str, int]:
    """POST each pending ban to the webhook; a failure stays pending for the next tick, up to
    WEBHOOK_ATTEMPTS.

    No transaction stays open while the webhook answers (up to 5 s a ban): pending bans are
    read in one short transaction and their outcomes written in another. Two ticks never
    deliver at once: a session-level advisory lock, held on a connection outside any
    transaction, lets one in and the other skips (Postgres drops the lock if the process
    dies, and undelivered bans stay pending)."""
    url = config.security.failed_logins.webhook_url
    if url is None:
        return {}
    with session_factory() as session:
        engine = session.get_bind()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
        if not lock.scalar(select(func.pg_try_advisory_lock(WEBHOOK_LOCK))):
            return {"skipped": 1}
        try:
            return _deliver(session_factory, url, limit)
        finally:
            lock.scalar(select(func.pg_advisory_unlock(WEBHOOK_LOCK)))


def _deliver(session_factory: Callable[[], Any], url: str, limit: int) -> dict[str, int]:
    pending: list[tuple[int, str, dict[str, Any]]] = []
    with session_factory() as session:
        for ban in session.scalars(
            select(SecurityBan)
            .where(SecurityBan.webhook_state == "pending")
            .order_by(SecurityBan.id)
            .limit(limit)
        ):
            event = "unban" if ban.lifted_at is not None else "ban"
            pending.append((ban.id, event, ban_payload(ban, event)))
    outcomes: list[tuple[int, str, bool]] = []
    with httpx.Client(timeout=5.0) as client:
        for ban_id, event, payload in pending:
            try:
                client.post(url, json=payload).raise_for_status()
            except httpx.HTTPError as error:
                log.warning("ban webhook for ban %s failed: %s", ban_id, type(error).__name__)
                outcomes.append((ban_id, event, False))
                continue
            outcomes.append((ban_id, event, True))
    with session_factory() as session:
        for ban_id, event, ok in outcomes:
            still = [SecurityBan.id == ban_id, SecurityBan.webhook_state == "pending"]
            if event == "ban":
                # Lifted while its ban was in flight: the unban is now pending; leave it so.
                still.append(SecurityBan.lifted_at.is_(None))
            attempts = SecurityBan.webhook_attempts + 1
            state = case((attempts >= WEBHOOK_ATTEMPTS, "failed"), else_="pending")
            session.execute(
                update(SecurityBan)
                .where(*still)
                .values(webhook_attempts=attempts, webhook_state="sent" if ok else state)
            )
    sent = sum(1 for _, _, ok in outcomes if ok)
    return {"sent": sent, "failed": len(outcomes) - sent}


def unban(
    session: Session,
    config: EventopsConfig,
    value: str,
    kind: str,
    by: str,
    now: datetime,
) -> list[int]:
    """Lift every active ban of `value`; each lift is an event on its incident."""
    bans = list(
        session.scalars(
            select(SecurityBan).where(
                SecurityBan.kind == kind,
                SecurityBan.value == value,
                SecurityBan.lifted_at.is_(None),
                SecurityBan.until > now,
            )
        )
    )
    for ban in bans:
        session.execute(
            update(SecurityBan)
            .where(SecurityBan.id == ban.id)
            .values(
                lifted_at=now,
                lifted_by=by,
                webhook_state="pending" if config.security.failed_logins.webhook_url else None,
                webhook_attempts=0,
            )
        )
        if ban.incident_id is not None:
            add_event(
                session, ban.incident_id, now, "unban", actor=by, detail=f"{kind} {value} unbanned"
            )
    return [ban.id for ban in bans]
