"""What the live dashboard shows, as plain functions over a session (no HTTP here).

Every query is bounded: a page of checks (keyset pagination on indexed columns), counts by
state from one grouped query, the open incidents (capped), one check's chart (bucketed).
Nothing ever reads 100,000 rows into Python. The other duties' summaries (rollups, workers,
insight, reports) are used when their modules exist and replaced by a fallback or by
"not configured" when they do not.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import bindparam, case, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import Integer

from models.config import EventopsConfig
from models.tables import Check, Incident, IncidentEvent

log = logging.getLogger(__name__)

# The states a check can be in, as the dashboard filters them. `failing` (below the alert
# threshold, Uptime Kuma's "pending") and `unknown` (never probed) are drawn amber.
STATES = ("up", "failing", "down", "unknown", "disabled")
MAX_PAGE = 500
# Heartbeats per row in the check list (the newest outcomes, oldest first).
BEATS = 20
# Charts never have more points than this, whatever the window.
MAX_POINTS = 120
# Windows up to this long are drawn from raw outcomes (the newest minutes are not rolled up
# yet); longer ones from rollups when core/rollups.py exists.
RAW_WINDOW = timedelta(hours=6)
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


class DashboardQueryError(ValueError):
    """A bad filter or cursor: the message names the parameter and the reason."""


@dataclass(frozen=True)
class CheckPage:
    items: list[dict[str, Any]]
    # The cursor for the next page (the last item's name), None on the last page.
    next_after: str | None


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    """Another duty's function, if that duty has landed (guarded import)."""
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if callable(found) else None


def _prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (in byte order);
    None when there is none (the prefix is all U+10FFFF, the last code point)."""
    stem = prefix.rstrip(chr(sys.maxunicode))
    return stem[:-1] + chr(ord(stem[-1]) + 1) if stem else None


def _text_param(name: str, value: str) -> str:
    """Postgres text cannot hold NUL: refuse it here as a bad parameter, not a server error."""
    if "\x00" in value:
        raise DashboardQueryError(f"{name}: must not contain a NUL character")
    return value


def _filters(
    *, state: str | None, group: str | None, name_prefix: str | None
) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}
    if state is not None:
        if state not in STATES:
            raise DashboardQueryError(f"state: must be one of {', '.join(STATES)}")
        if state == "disabled":
            where.append("NOT c.enabled")
        else:
            where.append("c.status = :state AND c.enabled")
            params["state"] = state
    if group:
        where.append("c.group_name = :group")
        params["group"] = _text_param("group", group)
    if name_prefix:
        # A range on the C-collated name: the same index serves the prefix and the order.
        where.append('c.name COLLATE "C" >= :prefix')
        params["prefix"] = _text_param("q", name_prefix)
        prefix_end = _prefix_end(name_prefix)
        if prefix_end is not None:
            where.append('c.name COLLATE "C" < :prefix_end')
            params["prefix_end"] = prefix_end
    return where, params


def latest_status_page(
    session: Session,
    *,
    state: str | None = None,
    group: str | None = None,
    name_prefix: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> CheckPage:
    """One page of checks in name order with their latest status and newest heartbeats.

    Keyset pagination: pass the previous page's `next_after` as `after`. The order and the
    filters run on indexes (`ix_checks_name_c`, `ix_checks_status_name`,
    `ix_checks_group_name`), and the heartbeats are an index scan of the outcomes' (check,
    slot) key per row on the page, so the cost is the page size, not the number of checks.
    """
    sql, params = _page_query(state, group, name_prefix, after, limit)
    rows = session.execute(text(sql), params).mappings().all()
    items = [
        {
            "id": row["id"],
            "name": row["name"],
            "group": row["group_name"],
            "state": row["status"] if row["enabled"] else "disabled",
            "severity": row["severity"],
            "interval_s": row["interval_s"],
            "consecutive_failures": row["consecutive_failures"],
            "last_checked_at": _iso(row["last_checked_at"]),
            "last_latency_ms": row["last_latency_ms"],
            "last_reason": row["last_reason"],
            "beats": list(row["beats"] or []),
        }
        for row in rows[:limit]
    ]
    next_after = items[-1]["name"] if len(rows) > limit else None
    return CheckPage(items=items, next_after=next_after)


def explain_latest_status_page(
    session: Session,
    *,
    state: str | None = None,
    group: str | None = None,
    name_prefix: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> str:
    """The plan of exactly the query `latest_status_page` runs (for tests and benchmarks)."""
    sql, params = _page_query(state, group, name_prefix, after, limit)
    rows = session.execute(text("EXPLAIN " + sql), params).scalars()
    return "\n".join(rows)


def _page_query(
    state: str | None,
    group: str | None,
    name_prefix: str | None,
    after: str | None,
    limit: int,
) -> tuple[str, dict[str, Any]]:
    if not 1 <= limit <= MAX_PAGE:
        raise DashboardQueryError(f"limit: must be between 1 and {MAX_PAGE}")
    where, params = _filters(state=state, group=group, name_prefix=name_prefix)
    if after:
        where.append('c.name COLLATE "C" > :after')
        params["after"] = _text_param("after", after)
    params["limit"] = limit + 1
    params["beats"] = BEATS
    sql = f"""
        SELECT c.id, c.name, c.group_name, c.status, c.enabled, c.severity, c.interval_s,
               c.consecutive_failures, c.last_checked_at, c.last_latency_ms, c.last_reason,
               recent.beats
        FROM checks c
        LEFT JOIN LATERAL (
            SELECT array_agg(o.status ORDER BY o.slot) AS beats
            FROM (
                SELECT status, slot FROM outcomes
                WHERE check_id = c.id
                ORDER BY slot DESC
                LIMIT :beats
            ) o
        ) recent ON true
        {"WHERE " + " AND ".join(where) if where else ""}
        ORDER BY c.name COLLATE "C"
        LIMIT :limit
    """
    return sql, params


def state_counts(
    session: Session, *, group: str | None = None, name_prefix: str | None = None
) -> dict[str, int]:
    """How many checks are in each state (one grouped query), under the group and name
    filters but not the state filter, so the state tabs show what each would list."""
    where, params = _filters(state=None, group=group, name_prefix=name_prefix)
    sql = f"""
        SELECT CASE WHEN c.enabled THEN c.status ELSE 'disabled' END AS state, count(*) AS n
        FROM checks c
        {"WHERE " + " AND ".join(where) if where else ""}
        GROUP BY 1
    """
    counts = dict.fromkeys(STATES, 0)
    for state, n in session.execute(text(sql), params):
        counts[state] = counts.get(state, 0) + n
    counts["total"] = sum(counts[s] for s in STATES)
    return counts


def groups(session: Session, limit: int = 500) -> list[dict[str, Any]]:
    """The check groups with their sizes, for the group filter."""
    rows = session.execute(
        text(
            "SELECT group_name, count(*) FROM checks GROUP BY group_name "
            'ORDER BY group_name COLLATE "C" LIMIT :limit'
        ),
        {"limit": limit},
    ).all()
    return [{"name": name, "checks": n} for name, n in rows]


def check_by_name(session: Session, name: str) -> dict[str, Any] | None:
    check = session.scalar(select(Check).where(Check.name == name))
    return _check_detail(check) if check else None


def check_by_id(session: Session, check_id: int) -> dict[str, Any] | None:
    check = session.get(Check, check_id)
    return _check_detail(check) if check else None


def _check_detail(check: Check) -> dict[str, Any]:
    return {
        "id": check.id,
        "name": check.name,
        "group": check.group_name,
        "state": check.status if check.enabled else "disabled",
        "severity": check.severity,
        "category": check.category,
        "impact": check.impact,
        "interval_s": check.interval_s,
        "timeout_s": check.timeout_s,
        "consecutive_failures": check.consecutive_failures,
        "last_checked_at": _iso(check.last_checked_at),
        "last_latency_ms": check.last_latency_ms,
        "last_reason": check.last_reason,
        "next_due_at": _iso(check.next_due_at),
    }


# -- charts and uptime ----------------------------------------------------------------------


def bucket_for(window: timedelta) -> timedelta:
    """A round bucket (whole minutes) giving at most MAX_POINTS points over the window."""
    seconds = max(60, int(window.total_seconds() // MAX_POINTS))
    return timedelta(seconds=-(-seconds // 60) * 60)


def series(session: Session, check_id: int, since: datetime, until: datetime) -> dict[str, Any]:
    """Response time and uptime of one check over [since, until), bucketed for a chart.

    Points: {t, avg_ms, max_ms, up, total}. Long windows come from rollups when that duty
    exists (`core.rollups.series`); short ones, and every window without rollups, from raw
    outcomes through the (check, slot) index.
    """
    if until <= since:
        raise DashboardQueryError("since: must be before until")
    points: list[dict[str, Any]] | None = None
    source = "outcomes"
    rollup_series = _optional("core.rollups", "series")
    if rollup_series is not None and until - since > RAW_WINDOW:
        resolution = "hour" if until - since > timedelta(days=2) else "minute"
        try:
            points = _adapt_rollup_points(
                rollup_series(session, check_id, since, until, resolution), since, until
            )
            source = f"rollups ({resolution})"
        except Exception:  # another duty's shape changed: the raw outcomes still answer
            log.warning("rollup series unusable; falling back to raw outcomes", exc_info=True)
            points = None
    if points is None:
        points = _raw_series(session, check_id, since, until)
    up = sum(p["up"] for p in points)
    total = sum(p["total"] for p in points)
    return {
        "check_id": check_id,
        "since": _iso(since),
        "until": _iso(until),
        "source": source,
        "bucket_s": bucket_for(until - since).total_seconds(),
        "points": points,
        "uptime": (up / total) if total else None,
    }


def _raw_series(
    session: Session, check_id: int, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    bucket = bucket_for(until - since)
    rows = session.execute(
        text(
            """
            SELECT date_bin(:bucket, slot, :origin) AS t,
                   avg(latency_ms) AS avg_ms, max(latency_ms) AS max_ms,
                   count(*) FILTER (WHERE status = 'up') AS up,
                   count(*) FILTER (WHERE status <> 'missed') AS total
            FROM outcomes
            WHERE check_id = :check_id AND slot >= :since AND slot < :until
            GROUP BY 1 ORDER BY 1
            """
        ),
        {"bucket": bucket, "origin": since, "check_id": check_id, "since": since, "until": until},
    ).mappings()
    return [
        {
            "t": _iso(row["t"]),
            "avg_ms": _round(row["avg_ms"]),
            "max_ms": _round(row["max_ms"]),
            "up": row["up"],
            "total": row["total"],
        }
        for row in rows
    ]


def _adapt_rollup_points(raw: Any, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """core.rollups.series' points ({bucket, up, down, missed, avg_ms, max_ms, ...}) merged
    into the chart's buckets (at most MAX_POINTS), latency averaged by probe count."""
    bucket = bucket_for(until - since)
    merged: dict[datetime, dict[str, Any]] = {}
    for row in raw:
        # core.rollups.series gives ISO strings (JSON-ready for the reports too).
        at = row["bucket"]
        at = datetime.fromisoformat(at) if isinstance(at, str) else at
        key = since + ((at - since) // bucket) * bucket if at >= since else since
        up, down = int(row["up"]), int(row["down"])
        point = merged.setdefault(key, {"sum": 0.0, "n": 0, "max": None, "up": 0, "total": 0})
        point["up"] += up
        point["total"] += up + down
        if row.get("avg_ms") is not None and up + down:
            point["sum"] += float(row["avg_ms"]) * (up + down)
            point["n"] += up + down
        if row.get("max_ms") is not None:
            point["max"] = max(point["max"] or 0.0, float(row["max_ms"]))
    return [
        {
            "t": _iso(key),
            "avg_ms": _round(p["sum"] / p["n"]) if p["n"] else None,
            "max_ms": _round(p["max"]),
            "up": p["up"],
            "total": p["total"],
        }
        for key, p in sorted(merged.items())
    ]


def uptime(
    session: Session, check_ids: Sequence[int], since: datetime, until: datetime
) -> dict[int, float | None]:
    """Share of up outcomes per check over the window (None: no outcomes in it)."""
    if not check_ids:
        return {}
    result: dict[int, float | None] = dict.fromkeys(check_ids)
    rollup_uptime = _optional("core.rollups", "uptime")
    if rollup_uptime is not None and until - since > RAW_WINDOW:
        try:
            found = rollup_uptime(session, list(check_ids), since, until)
            for check_id, value in dict(found).items():
                result[int(check_id)] = None if value is None else float(value)
            return result
        except Exception:
            log.warning("rollup uptime unusable; falling back to raw outcomes", exc_info=True)
    rows = session.execute(
        text(
            """
            SELECT check_id,
                   count(*) FILTER (WHERE status = 'up')::float
                       / nullif(count(*) FILTER (WHERE status <> 'missed'), 0)
            FROM outcomes
            WHERE check_id = ANY(:ids) AND slot >= :since AND slot < :until
            GROUP BY check_id
            """
        ).bindparams(bindparam("ids", type_=ARRAY(Integer))),
        {"ids": list(check_ids), "since": since, "until": until},
    ).all()
    for check_id, value in rows:
        result[check_id] = value
    return result


# -- incidents ------------------------------------------------------------------------------


def open_incidents(session: Session, limit: int = 100) -> dict[str, Any]:
    """Unresolved incidents, unacknowledged first, then by severity and age; capped."""
    total = session.scalar(text("SELECT count(*) FROM incidents WHERE status <> 'resolved'"))
    rows = session.execute(
        select(Incident, Check.name)
        .outerjoin(Check, Check.id == Incident.check_id)
        .where(Incident.status != "resolved")
        # 'open' before 'acknowledged', then critical first, newest first, in SQL: sorting
        # after the LIMIT let a storm of newer warnings push an older critical off the list.
        .order_by(
            (Incident.status != "open"),
            case(SEVERITY_RANK, value=Incident.severity, else_=len(SEVERITY_RANK)),
            Incident.opened_at.desc(),
            Incident.id.desc(),
        )
        .limit(limit)
    ).all()
    items = [_incident(incident, check_name) for incident, check_name in rows]
    return {"total": total or 0, "items": items}


def incident_detail(session: Session, incident_id: int) -> dict[str, Any] | None:
    row = session.execute(
        select(Incident, Check.name)
        .outerjoin(Check, Check.id == Incident.check_id)
        .where(Incident.id == incident_id)
    ).first()
    if row is None:
        return None
    detail = _incident(row[0], row[1])
    events = session.scalars(
        select(IncidentEvent)
        .where(IncidentEvent.incident_id == incident_id)
        .order_by(IncidentEvent.at, IncidentEvent.id)
        .limit(500)
    )
    detail["timeline"] = [
        {"at": _iso(e.at), "kind": e.kind, "actor": e.actor, "detail": e.detail} for e in events
    ]
    return detail


def _incident(incident: Incident, check_name: str | None) -> dict[str, Any]:
    return {
        "id": incident.id,
        "title": incident.title,
        "severity": incident.severity,
        "category": incident.category,
        "status": incident.status,
        "check": check_name,
        "summary": incident.summary,
        "impact": incident.impact,
        "opened_at": _iso(incident.opened_at),
        "notified_at": _iso(incident.notified_at),
        "acknowledged_at": _iso(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by,
        "flapping": incident.flapping,
        "suppressed_by": incident.parent_incident_id,
    }


# -- workers, queues, insight, reports ------------------------------------------------------


def workers_and_queues(
    session: Session,
    now: datetime,
    broker_url: str | None,
    queues: Sequence[str],
    stale_after: timedelta | None = None,
) -> dict[str, Any]:
    """Worker liveness and queue depth: the maintenance duty's summary when it exists, else
    the queue lengths straight from Redis (LLEN of each queue). `stale_after` is the
    config's `maintenance.worker_stale_after`, so the page calls a worker missing exactly
    when the alert does."""
    summary = _optional("core.maintenance.summary", "workers_and_queues")
    if summary is not None:
        try:
            try:
                limit = {} if stale_after is None else {"stale_after": stale_after}
                found = dict(summary(session, now, queue_names=tuple(queues), **limit))
            except TypeError:  # an older signature without queue names
                found = dict(summary(session, now))
            found.setdefault("source", "maintenance")
            found = _jsonable(found)
            # A queue the collector has not measured lately: ask Redis now.
            missing = [q["name"] for q in found.get("queues", []) if q.get("length") is None]
            if missing or not found.get("queues"):
                live = _queue_lengths(broker_url, missing or queues)
                lengths = {q["name"]: q["length"] for q in live["queues"]}
                known = {q["name"] for q in found.get("queues", [])}
                for queue in found.get("queues", []):
                    if queue.get("length") is None and queue["name"] in lengths:
                        queue["length"] = lengths[queue["name"]]
                found.setdefault("queues", []).extend(
                    q for q in live["queues"] if q["name"] not in known
                )
                if "error" in live:
                    found["error"] = live["error"]
            return dict(found)
        except Exception as error:
            log.warning("workers_and_queues failed; using queue lengths only", exc_info=True)
            fallback = _queue_lengths(broker_url, queues)
            fallback["error"] = f"worker summary failed: {type(error).__name__}"
            return fallback
    return _queue_lengths(broker_url, queues)


def _queue_lengths(broker_url: str | None, queues: Sequence[str]) -> dict[str, Any]:
    result: dict[str, Any] = {"source": "redis", "workers": None, "queues": []}
    if not broker_url:
        result["error"] = "no broker configured"
        return result
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        with client.pipeline(transaction=False) as pipe:
            for name in queues:
                pipe.llen(name)
            lengths = pipe.execute()
        result["queues"] = [
            {"name": name, "length": int(n), "oldest_age_s": None}
            for name, n in zip(queues, lengths, strict=True)
        ]
    except redis.RedisError as error:
        result["error"] = f"broker unreachable: {type(error).__name__}"
    finally:
        client.close()
    return result


def insight_summary(session: Session, config: EventopsConfig, now: datetime) -> dict[str, Any]:
    """User activity, KPIs against targets and Web Vitals from the insight duty, or
    {"configured": False} when it has not landed."""
    summary = _optional("core.insight.summary", "dashboard_summary")
    if summary is None:
        return {"configured": False}
    try:
        found = dict(summary(session, config, now))
    except Exception as error:
        log.warning("dashboard_summary failed", exc_info=True)
        return {"configured": True, "error": f"{type(error).__name__}: {error}"[:300]}
    found["configured"] = True
    return _jsonable(found)


def reports(var_dir: Path, directory: Path | None = None) -> dict[str, Any]:
    """The reports on disk (the reports duty's registry), newest first, with the URLs the
    dashboard serves their files under."""
    try:
        found = _report_rows(var_dir, directory)
    except Exception as error:
        log.warning("list_reports failed", exc_info=True)
        return {"configured": True, "items": [], "error": f"{type(error).__name__}"}
    if found is None:
        return {"configured": False, "items": []}
    items = []
    for row in found[:50]:
        name = str(row.get("name"))
        base = f"/reports/{quote(name, safe='')}/"
        html, md = row.get("html_path") or row.get("html"), row.get("md_path") or row.get("md")
        items.append(
            {
                "name": name,
                "kind": row.get("kind"),
                "created_at": _iso(row.get("created_at")),
                "html_url": base + Path(str(html)).name if html else None,
                "md_url": base + Path(str(md)).name if md else None,
            }
        )
    return {"configured": True, "items": items}


def report_file(
    var_dir: Path, name: str, filename: str, directory: Path | None = None
) -> Path | None:
    """A file of the report called `name` (its HTML, Markdown or a chart), if the registry
    lists that report; only plain file names inside the report's own folder."""
    if "/" in filename or "\\" in filename or filename.startswith("."):
        return None
    for row in _report_rows(var_dir, directory) or []:
        if str(row.get("name")) != name:
            continue
        anchor = row.get("html_path") or row.get("md_path")
        if not anchor:
            return None
        path = Path(str(anchor)).parent / filename
        return path if path.is_file() else None
    return None


def _report_rows(var_dir: Path, directory: Path | None) -> list[dict[str, Any]] | None:
    registry = _optional("core.reports.registry", "list_reports")
    if registry is None:
        return None
    found = registry(var_dir, directory) if directory is not None else registry(var_dir)
    return [_row(entry) for entry in found]


def _row(entry: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    if isinstance(entry, dict):
        return entry
    if hasattr(entry, "as_dict"):
        return dict(entry.as_dict())
    if is_dataclass(entry) and not isinstance(entry, type):
        return asdict(entry)
    return dict(vars(entry))


# -- helpers --------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def _jsonable(value: Any) -> Any:
    """Other duties' summaries may hold datetimes, decimals or dataclasses."""
    from dataclasses import asdict, is_dataclass
    from decimal import Decimal

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
