"""The `maintenance:` section of the config: infrastructure collectors, database
maintenance reports and eventops' self-monitoring (docs/maintenance.md).

models/config.py imports this module, so it must not import models.config at import time:
durations are parsed by a validator that looks `parse_duration` up when it runs.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)


def _duration(value: Any) -> timedelta:
    from models.config import parse_duration

    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]

MaintenanceTarget = Literal["platform-db", "eventops-db"]
ALL_TARGETS: tuple[MaintenanceTarget, ...] = ("platform-db", "eventops-db")


class ActionsWindow(BaseModel):
    """When the safe maintenance actions may run: a daily local-time window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = Field(
        default="02:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="HH:MM in the config's `timezone`: start of the quiet window.",
    )
    end: str = Field(
        default="05:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d$",
        description="HH:MM in the config's `timezone`: end of the quiet window (may wrap "
        "past midnight).",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> ActionsWindow:
        if self.start == self.end:
            raise ValueError("end: must differ from start (the window would be empty)")
        return self


class MaintenanceConfig(BaseModel):
    """Infrastructure metrics, index/query/vacuum reports and self-monitoring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True, description="Collect infrastructure metrics and write maintenance reports."
    )
    databases: list[MaintenanceTarget] = Field(
        default_factory=lambda: list(ALL_TARGETS),
        description="Databases the Postgres collector and the reports look at: the platform's "
        "(EVENTOPS_PLATFORM_DATABASE_URL) and eventops' own.",
    )
    top_n: int = Field(
        default=10, ge=1, le=100, description="Largest tables/indexes and top queries reported."
    )
    apply_fixes: bool = Field(
        default=False,
        description="Run the safe actions (REINDEX CONCURRENTLY of invalid or bloated "
        "indexes, VACUUM/ANALYZE) inside `actions_window`; off: report only.",
    )
    actions_window: ActionsWindow = Field(
        default_factory=ActionsWindow,
        description="Outside business hours, in the config's `timezone`.",
    )
    actions_silence: Duration = Field(
        default=timedelta(hours=1),
        description="Length of the silence held over what a maintenance action touches.",
    )
    dead_tuple_ratio: float = Field(
        default=0.2, gt=0, le=1, description="n_dead_tup / (live + dead) that calls for VACUUM."
    )
    min_dead_tuples: int = Field(
        default=10_000, ge=0, description="Fewer dead tuples than this never call for VACUUM."
    )
    stale_statistics_ratio: float = Field(
        default=0.2,
        gt=0,
        description="n_mod_since_analyze / live tuples that calls for ANALYZE.",
    )
    min_modified_rows: int = Field(
        default=1_000, ge=0, description="Fewer modified rows never call for ANALYZE."
    )
    index_bloat_ratio: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Estimated wasted fraction of an index that calls for REINDEX.",
    )
    min_index_bloat_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=0,
        description="Smaller estimated waste than this is not reported as bloat.",
    )
    query_regression_ratio: float = Field(
        default=1.5,
        gt=1,
        description="Mean time this week over last week's that counts as a regression.",
    )
    worker_stale_after: Duration = Field(
        default=timedelta(seconds=90),
        description="A worker whose heartbeat is older than this is missing.",
    )
    worker_heartbeat_every: Duration = Field(
        default=timedelta(seconds=15),
        description="How often each worker reports itself (CPU, memory, disk).",
    )
    beat_stale_after: Duration = Field(
        default=timedelta(seconds=60),
        description="The beat heartbeat (every 15 s) older than this is a failed check.",
    )
    sweeper_stale_after: Duration = Field(
        default=timedelta(seconds=60),
        description="The escalation sweeper's last run (every 5 s) older than this fails.",
    )
    queue_lag_max: Duration = Field(
        default=timedelta(minutes=5),
        description="Oldest waiting message older than this fails the queue-lag check.",
    )
    outbox_backlog_after: Duration = Field(
        default=timedelta(minutes=5),
        description="A due notification unsent for longer than this counts as backlog.",
    )

    @field_validator("databases")
    @classmethod
    def _no_duplicates(cls, names: list[MaintenanceTarget]) -> list[MaintenanceTarget]:
        if len(set(names)) != len(names):
            raise ValueError("lists a database twice")
        return names

    @field_validator(
        "actions_silence",
        "worker_stale_after",
        "worker_heartbeat_every",
        "beat_stale_after",
        "sweeper_stale_after",
        "queue_lag_max",
        "outbox_backlog_after",
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        # 0 s would make the heartbeat thread write to Postgres in a tight loop, and a
        # zero limit would fail its check on every run.
        if value <= timedelta(0):
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _heartbeat_inside_the_limit(self) -> MaintenanceConfig:
        # A heartbeat slower than the staleness limit makes every healthy worker "missing"
        # between two beats: a critical page that is never true.
        if self.worker_heartbeat_every * 2 > self.worker_stale_after:
            raise ValueError(
                "worker_heartbeat_every: must be at most half of worker_stale_after "
                f"({self.worker_stale_after.total_seconds():g} s), or healthy workers page "
                "as missing between heartbeats"
            )
        return self
