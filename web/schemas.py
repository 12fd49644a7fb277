"""The dashboard API's answers, typed, so /openapi.json (and docs/openapi.json) describe them.

Summaries from other duties (workers, insight, reports) stay open objects: their owners
add fields without this file changing.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

State = Literal["up", "failing", "down", "unknown", "disabled"]


class StateCounts(BaseModel):
    up: int
    failing: int
    down: int
    unknown: int
    disabled: int
    total: int


class CheckRow(BaseModel):
    id: int
    name: str
    group: str
    state: State
    severity: str
    interval_s: float
    consecutive_failures: int
    last_checked_at: str | None
    last_latency_ms: float | None
    last_reason: str | None
    beats: list[str] = Field(description="Newest outcomes' statuses, oldest first (up to 20).")
    uptime_24h: float | None = Field(description="Share of up outcomes over 24 hours (0 to 1).")


class CheckPageOut(BaseModel):
    items: list[CheckRow]
    next_after: str | None = Field(description="Pass as `after` for the next page; null: last.")
    counts: StateCounts


class Uptimes(BaseModel):
    h24: float | None = Field(alias="24h")
    d7: float | None = Field(alias="7d")
    d30: float | None = Field(alias="30d")


class CheckOut(BaseModel):
    id: int
    name: str
    group: str
    state: State
    severity: str
    category: str
    impact: str | None
    interval_s: float
    timeout_s: float
    consecutive_failures: int
    last_checked_at: str | None
    last_latency_ms: float | None
    last_reason: str | None
    next_due_at: str | None
    uptime: Uptimes


class SeriesPoint(BaseModel):
    t: str = Field(description="Start of the bucket.")
    avg_ms: float | None
    max_ms: float | None
    up: int
    total: int = Field(description="Outcomes in the bucket, missed slots not counted.")


class SeriesOut(BaseModel):
    check_id: int
    window: str
    since: str
    until: str
    source: str = Field(description="`outcomes`, or `rollups (minute|hour)` for long windows.")
    bucket_s: float
    points: list[SeriesPoint]
    uptime: float | None


class IncidentRow(BaseModel):
    id: int
    title: str
    severity: str
    category: str
    status: Literal["open", "acknowledged", "resolved"]
    check: str | None
    summary: str | None
    impact: str | None
    opened_at: str | None
    notified_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    flapping: bool
    suppressed_by: int | None = Field(description="The open incident this one depends on.")


class TimelineEvent(BaseModel):
    at: str | None
    kind: str
    actor: str
    detail: str | None


class IncidentOut(IncidentRow):
    timeline: list[TimelineEvent]


class IncidentList(BaseModel):
    total: int = Field(description="Unresolved incidents in all (items are capped).")
    items: list[IncidentRow]


class AcknowledgeOut(BaseModel):
    acknowledged: bool = Field(description="False when the incident was not open.")
    incident: IncidentOut


class GroupRow(BaseModel):
    name: str
    checks: int


class GroupsOut(BaseModel):
    groups: list[GroupRow]


class SummaryOut(BaseModel):
    now: str
    user: str
    counts: StateCounts
    incidents: IncidentList
    workers: dict[str, Any]
    insight: dict[str, Any]
    reports: dict[str, Any]
