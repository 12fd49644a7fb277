"""Prometheus /metrics: check states, latencies, incidents, queues and task durations, read from
Postgres and Redis at scrape time so any process serving it tells the same numbers.

Cheap at 100,000 checks: counts come from grouped queries; per-check series stop at
EVENTOPS_METRICS_CHECK_SERIES_LIMIT (checks that are not up first, then by name), and
`eventops_check_series_truncated` says when they were cut. See docs/observability.md.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from core.maintenance.redis_metrics import queue_figures
from models.config import SEVERITIES
from models.tables import Check, Incident
from workers.settings import Settings, get_settings
from workers.task_metrics import (
    DURATION_BUCKETS,
    OUTCOMES_KEY,
    TASK_KEY_PREFIX,
    TASK_NAMES_KEY,
)

log = logging.getLogger(__name__)

CHECK_STATES = ("up", "failing", "down", "unknown", "disabled")
INCIDENT_STATES = ("open", "acknowledged")

SessionFactory = Callable[[], AbstractContextManager[Session]]


def _state_of(enabled: Any, status_column: Any) -> Any:
    return case((enabled.is_(False), "disabled"), else_=status_column)


class EventopsCollector(Collector):
    """Yields every eventops metric from fresh queries; registered per scrape."""

    def __init__(
        self,
        sessions: SessionFactory,
        redis_client: redis.Redis | None,
        queues: tuple[str, ...],
        check_series_limit: int,
        now: Callable[[], float] = time.time,
    ):
        self.sessions = sessions
        self.redis = redis_client
        self.queues = queues
        self.check_series_limit = check_series_limit
        self.now = now

    def describe(self) -> list[Metric]:
        # Nothing at registration: describing would run every query once more.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._postgres()
        yield from self._redis()

    # --- Postgres -----------------------------------------------------------------------

    def _postgres(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("eventops_database_up", "1 when eventops' Postgres answered.")
        try:
            with self.sessions() as session:
                families = [
                    *self._check_counts(session),
                    *self._check_series(session),
                    *self._incidents(session),
                ]
        except Exception as error:  # a scrape must still say what it could not read
            log.warning("metrics: Postgres unreadable: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _check_counts(self, session: Session) -> list[Metric]:
        state = _state_of(Check.enabled, Check.status).label("state")
        by_state = GaugeMetricFamily(
            "eventops_checks", "Checks by current state.", labels=["state"]
        )
        counts = dict.fromkeys(CHECK_STATES, 0)
        for row in session.execute(select(state, func.count()).group_by(state)):
            counts[row[0]] = row[1]
        for name, count in counts.items():
            by_state.add_metric([name], count)

        by_group = GaugeMetricFamily(
            "eventops_checks_by_group",
            "Checks by service group and state (groups past the series limit are left out).",
            labels=["group", "state"],
        )
        rows = session.execute(
            select(Check.group_name, state, func.count())
            .group_by(Check.group_name, state)
            .order_by(Check.group_name)
            .limit(self.check_series_limit)
        )
        for group, group_state, count in rows:
            by_group.add_metric([group, group_state], count)
        return [by_state, by_group]

    def _check_series(self, session: Session) -> list[Metric]:
        limit = self.check_series_limit
        state = _state_of(Check.enabled, Check.status)
        columns = (
            Check.name,
            Check.group_name,
            state,
            Check.last_latency_ms,
            Check.last_checked_at,
            Check.consecutive_failures,
        )
        # Checks that are not up matter most: they always make it into the series first.
        troubled = session.execute(
            select(*columns)
            .where(Check.status != "up", Check.enabled)
            .order_by(Check.name)
            .limit(limit)
        ).all()
        rest = session.execute(
            select(*columns)
            .where(Check.status == "up", Check.enabled)
            .order_by(Check.name)
            .limit(max(limit - len(troubled), 0))
        ).all()
        total = session.scalar(select(func.count()).select_from(Check).where(Check.enabled)) or 0

        status_family = GaugeMetricFamily(
            "eventops_check_status",
            "1 for each enabled check, labelled with its current state (up, failing, down, "
            "unknown).",
            labels=["name", "group", "state"],
        )
        up_family = GaugeMetricFamily(
            "eventops_check_up",
            "1 if the check's last outcome was up, 0 if it failed; absent until first probed.",
            labels=["name", "group"],
        )
        latency = GaugeMetricFamily(
            "eventops_check_latency_seconds",
            "Latency of the check's latest probe.",
            labels=["name", "group"],
        )
        checked = GaugeMetricFamily(
            "eventops_check_last_checked_timestamp_seconds",
            "When the check's latest outcome was observed (Unix time).",
            labels=["name", "group"],
        )
        failures = GaugeMetricFamily(
            "eventops_check_consecutive_failures",
            "Failures in a row of the check.",
            labels=["name", "group"],
        )
        for name, group, check_state, latency_ms, checked_at, fails in [*troubled, *rest]:
            status_family.add_metric([name, group, check_state], 1)
            failures.add_metric([name, group], fails)
            if check_state != "unknown":
                up_family.add_metric([name, group], 1 if check_state == "up" else 0)
            if latency_ms is not None:
                latency.add_metric([name, group], latency_ms / 1000)
            if checked_at is not None:
                checked.add_metric([name, group], checked_at.timestamp())
        exported = len(troubled) + len(rest)
        truncated = GaugeMetricFamily(
            "eventops_check_series_truncated",
            "1 when more enabled checks exist than EVENTOPS_METRICS_CHECK_SERIES_LIMIT allows "
            "as per-check series.",
        )
        truncated.add_metric([], 1 if total > exported else 0)
        return [status_family, up_family, latency, checked, failures, truncated]

    def _incidents(self, session: Session) -> list[Metric]:
        open_family = GaugeMetricFamily(
            "eventops_incidents_open",
            "Unresolved incidents by severity and state (open, acknowledged).",
            labels=["severity", "state"],
        )
        counts: dict[tuple[str, str], int] = {
            (s, st): 0 for s in SEVERITIES for st in INCIDENT_STATES
        }
        for severity, state, count in session.execute(
            select(Incident.severity, Incident.status, func.count())
            .where(Incident.status != "resolved")
            .group_by(Incident.severity, Incident.status)
        ):
            counts[(severity, state)] = count
        for (severity, state), count in counts.items():
            open_family.add_metric([severity, state], count)

        total = CounterMetricFamily(
            "eventops_incidents",
            "Incidents ever opened, by severity (rows in Postgres).",
            labels=["severity"],
        )
        opened: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
        for severity, count in session.execute(
            select(Incident.severity, func.count()).group_by(Incident.severity)
        ):
            opened[severity] = count
        for severity, count in opened.items():
            total.add_metric([severity], count)
        return [open_family, total]

    # --- Redis --------------------------------------------------------------------------

    def _redis(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("eventops_redis_up", "1 when the broker's Redis answered.")
        if self.redis is None:
            up.add_metric([], 0)
            yield up
            return
        try:
            families = [*self._queues(self.redis), *self._tasks(self.redis)]
        except redis.RedisError as error:
            log.warning("metrics: Redis unreadable: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _queues(self, client: redis.Redis) -> list[Metric]:
        length = GaugeMetricFamily(
            "eventops_queue_length", "Messages waiting in the queue.", labels=["queue"]
        )
        lag = GaugeMetricFamily(
            "eventops_queue_lag_seconds",
            "Age of the oldest waiting message (0 when the queue is empty).",
            labels=["queue"],
        )
        # The same reading the self-monitoring check judges (core/maintenance/redis_metrics).
        for queue in queue_figures(client, self.queues, datetime.fromtimestamp(self.now(), UTC)):
            length.add_metric([queue.name], queue.length)
            lag.add_metric([queue.name], queue.oldest_age_s or 0.0)
        return [length, lag]

    def _tasks(self, client: redis.Redis) -> list[Metric]:
        durations = HistogramMetricFamily(
            "eventops_task_duration_seconds",
            "Wall time of finished tasks, from every worker process.",
            labels=["task"],
        )
        states = CounterMetricFamily(
            "eventops_tasks", "Finished tasks by final state.", labels=["task", "state"]
        )
        names = sorted(_text(n) for n in client.smembers(TASK_NAMES_KEY))
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(TASK_KEY_PREFIX + name)
        pipe.hgetall(OUTCOMES_KEY)
        *task_hashes, outcome_hash = pipe.execute()
        for name, raw in zip(names, task_hashes, strict=True):
            fields = {_text(k): _text(v) for k, v in raw.items()}
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound in DURATION_BUCKETS:
                cumulative += float(fields.get(f"le:{bound:g}", 0))
                buckets.append((floatToGoString(bound), cumulative))
            buckets.append(("+Inf", float(fields.get("count", 0))))
            durations.add_metric([name], buckets, sum_value=float(fields.get("sum", 0)))
            for field, value in fields.items():
                if field.startswith("state:"):
                    states.add_metric([name, field.removeprefix("state:")], float(value))

        outcomes = CounterMetricFamily(
            "eventops_outcomes",
            "Probe outcomes recorded by the workers, by status (kept in Redis; reset when "
            "Redis is flushed).",
            labels=["status"],
        )
        counted = {_text(k): int(v) for k, v in outcome_hash.items()}
        for outcome_status in ("up", "down"):
            outcomes.add_metric([outcome_status], counted.get(outcome_status, 0))
        return [durations, states, outcomes]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- the HTTP side ----------------------------------------------------------------------

_redis_clients: dict[str, redis.Redis] = {}


def _redis_for(url: str | None) -> redis.Redis | None:
    if not url:
        return None
    if url not in _redis_clients:
        _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return _redis_clients[url]


def metrics_settings(request: Request) -> Settings:
    """The settings /metrics reads: the app's own (`app.state.settings`, as web/app.py's
    create_app sets them), else the environment's. A dependency, so a test can override it."""
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else get_settings()


def render(settings: Settings, sessions: SessionFactory | None = None) -> bytes:
    """The whole exposition, in Prometheus' text format."""
    from models.db import session_scope
    from workers.app import QUEUES

    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        EventopsCollector(
            sessions or session_scope,
            _redis_for(settings.broker_url),
            QUEUES,
            settings.metrics_check_series_limit,
        )
    )
    return generate_latest(registry)


def require_token(
    settings: Annotated[Settings, Depends(metrics_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """With EVENTOPS_METRICS_TOKEN set, only `Authorization: Bearer <token>` gets in."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if not token:  # unset or empty (compose passes an empty variable through): open
        return
    expected = f"Bearer {token}".encode()
    if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="a bearer token is required (EVENTOPS_METRICS_TOKEN)",
            headers={"WWW-Authenticate": 'Bearer realm="eventops metrics"'},
        )


router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_token)],
    summary="Prometheus metrics",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: {"description": "No token"}},
)
def metrics(settings: Annotated[Settings, Depends(metrics_settings)]) -> Response:
    """Prometheus text exposition of eventops' state; a sync handler, so the queries run in
    the thread pool and never block the event loop."""
    return Response(render(settings), media_type=CONTENT_TYPE_LATEST)
