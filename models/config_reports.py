"""Config sections for log ingestion, error patterns, log rotation, capacity and reports.

Kept out of models/config.py so that file stays small; it imports these three sections.
This module must not import models.config at import time (that module imports this one),
so the few helpers it shares are looked up when a value is validated.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

LogKind = Literal["application", "system", "security", "business"]
_Severity = Literal["critical", "warning", "info"]
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def _duration(value: Any) -> timedelta:
    from models.config import parse_duration

    return parse_duration(value)


def parse_size(value: Any) -> int:
    """Read `1048576`, `10MB`, `512 KiB`, `8GB` into bytes (decimal kB/MB/GB, binary KiB/MiB)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 10MB or 1GiB")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return int(value)
    if isinstance(value, str) and (match := _SIZE.match(value)):
        number, unit = match.groups()
        return int(float(number) * _SIZE_UNITS[unit.lower() if unit else None])
    raise ValueError("must be a size such as 10MB or 1GiB")


def _number_or_size(value: Any) -> Any:
    return parse_size(value) if isinstance(value, str) else value


def _slug(name: Any) -> Any:
    if isinstance(name, str) and not _SLUG.match(name):
        raise ValueError("must be lower-case letters, digits, '.', '_' or '-' (max 63)")
    return name


Duration = Annotated[timedelta, BeforeValidator(_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Name = Annotated[str, BeforeValidator(_slug)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldMapping(_Strict):
    """Which JSON keys hold the four fields every entry has; dots reach into objects."""

    timestamp: str = Field(
        default="timestamp", description="Key of the time (ISO 8601 or Unix seconds)."
    )
    level: str = Field(default="level", description="Key of the level (error, warning, ...).")
    message: str = Field(default="message", description="Key of the message text.")
    service: str = Field(default="service", description="Key of the emitting service.")


class LogSourceConfig(_Strict):
    """One set of JSON-lines log files of one kind."""

    name: Name = Field(description="Unique name; offsets and entries are kept per source.")
    kind: LogKind = Field(description="application, system, security or business.")
    path: str = Field(
        description="A file, a directory (its files, not recursive; `.gz` skipped) or a glob "
        "such as /var/log/app/*.jsonl; a relative path is under EVENTOPS_VAR_DIR. Rotated "
        "siblings (`app.log.1`) are followed by inode."
    )
    fields: FieldMapping = Field(
        default_factory=FieldMapping, description="Where the timestamp, level, message are."
    )
    service: str | None = Field(
        default=None, description="Service for entries without one (default: the source name)."
    )
    enabled: bool = Field(default=True, description="Ingest this source.")


class PatternsConfig(_Strict):
    """Error pattern analysis: how errors are grouped, when one is new, regressed, a burst."""

    levels: list[str] = Field(
        default_factory=lambda: ["error", "err", "critical", "crit", "fatal", "alert", "emerg"],
        description="Levels (case-insensitive) whose entries are errors and get a fingerprint.",
    )
    quiet_period: Duration = Field(
        default=timedelta(days=7),
        description="A pattern unseen this long that comes back counts as regressed.",
    )
    new_for: Duration = Field(
        default=timedelta(hours=24),
        description="How long after its first sighting a pattern counts as new (burst check).",
    )
    burst_count: int = Field(
        default=10, ge=1, description="Occurrences within `burst_window` that make a burst."
    )
    burst_window: Duration = Field(
        default=timedelta(minutes=5), description="The window of the burst test."
    )
    severity: _Severity = Field(
        default="warning", description="Severity of the incident a new or regressed burst opens."
    )
    resolve_after: Duration = Field(
        default=timedelta(hours=1),
        description="A burst incident resolves once its pattern has been quiet this long.",
    )


class RotationTarget(_Strict):
    """A directory whose log files are rotated, compressed and pruned."""

    path: Path = Field(description="The directory.")
    pattern: str = Field(default="*.log", description="Which files in it are logs (a glob).")
    max_size: Size = Field(
        default=50 * 1024**2, description="Rotate a file once it is this big (10MB, 1GiB)."
    )
    max_age: Duration = Field(
        default=timedelta(days=1), description="Rotate a non-empty file at least this often."
    )
    keep: int = Field(default=14, ge=0, description="Rotated files kept per log (newest first).")
    keep_days: int | None = Field(
        default=30, ge=0, description="Rotated files older than this are deleted (days)."
    )
    method: Literal["copytruncate", "rename"] = Field(
        default="copytruncate",
        description="copytruncate for writers that keep the file open (no line lost, see "
        "docs/reports.md); rename for writers that reopen the path on each write.",
    )
    compress: bool = Field(default=True, description="gzip rotated files.")


class RotationConfig(_Strict):
    """Daily rotation of eventops' own logs and of configured directories."""

    own_logs: bool = Field(
        default=True, description="Rotate eventops' own logs in EVENTOPS_VAR_DIR/logs."
    )
    own: RotationTarget = Field(
        default_factory=lambda: RotationTarget(path=Path("logs")),
        description="Settings for eventops' own logs (a relative path is under var_dir).",
    )
    directories: list[RotationTarget] = Field(
        default_factory=list, description="Other directories to rotate."
    )


class LogsConfig(_Strict):
    """Log ingestion, error pattern analysis and rotation (docs/reports.md)."""

    sources: list[LogSourceConfig] = Field(
        default_factory=list, description="JSON-lines files to ingest into `log_entries`."
    )
    batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Entries per INSERT while ingesting."
    )
    max_bytes_per_run: Size = Field(
        default=64 * 1024**2,
        description="Most bytes read from one file per ingest run; the rest waits for the next.",
    )
    retention_days: int = Field(
        default=30, ge=1, description="Ingested entries older than this are deleted."
    )
    patterns: PatternsConfig = Field(default_factory=PatternsConfig)
    rotation: RotationConfig = Field(default_factory=RotationConfig)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[LogSourceConfig]) -> list[LogSourceConfig]:
        seen: dict[str, int] = {}
        for index, source in enumerate(sources):
            if source.name in seen:
                raise ValueError(
                    f"duplicate name {source.name!r} (entries {seen[source.name]} and {index})"
                )
            seen[source.name] = index
        return sources


class CostConfig(_Strict):
    """Unit costs that turn capacity into money (per month)."""

    currency: str = Field(default="NZD", description="Shown next to every cost.")
    database_per_gb_month: float = Field(default=0.21, ge=0, description="Database storage.")
    storage_per_gb_month: float = Field(default=0.035, ge=0, description="File storage.")
    per_million_requests: float = Field(default=1.0, ge=0, description="Request volume.")
    per_worker_month: float = Field(default=25.0, ge=0, description="Each worker process/VM.")
    base_month: float = Field(default=0.0, ge=0, description="Fixed plan fees.")


class CapacityLimit(_Strict):
    """A ceiling a tracked figure must stay under; a forecast reaching it soon is a warning."""

    metric: str = Field(
        description="users, database_bytes, storage_bytes, requests_per_day, "
        "monthly_cost, table_rows, or a name from `capacity.queries`."
    )
    subject: str = Field(default="platform", description="The table name for `table_rows`.")
    limit: Annotated[float, BeforeValidator(_number_or_size)] = Field(
        gt=0, description="The ceiling, in the metric's unit (sizes such as 8GB for bytes)."
    )
    description: str | None = Field(default=None, description="What happens at the ceiling.")


class ScalingConfig(_Strict):
    """When to scale; shown in the weekly report next to the current figures."""

    add_worker_queue_lag_s: float = Field(
        default=60.0, gt=0, description="Add a worker when queue lag stays above this (s)."
    )
    add_worker_cpu: float = Field(
        default=0.75, gt=0, le=1, description="Or when worker CPU stays above this share."
    )
    queue_lag_metric: str = Field(
        default="queue_oldest_age_s",
        description="Metrics-table name of the queue lag (per queue; the worst queue counts).",
    )
    cpu_metric: str = Field(
        default="cpu_usage",
        description="Metrics-table name of worker CPU, a share (per host; the busiest counts).",
    )
    database_plan_bytes: Size = Field(
        default=8 * 1000**3, description="The database plan's size (Supabase Pro: 8 GB)."
    )
    grow_database_at: float = Field(
        default=0.8, gt=0, le=1, description="Grow the plan when the database reaches this share."
    )


def _default_queries() -> dict[str, str]:
    return {
        "users": "SELECT count(*) FROM users",
        "requests_per_day": "SELECT count(*) FROM api_requests"
        " WHERE at >= now() - interval '1 day'",
    }


class CapacityConfig(_Strict):
    """Capacity tracking and forecasting over the platform database (docs/reports.md)."""

    enabled: bool = Field(
        default=True, description="Take daily capacity snapshots and check the limits."
    )
    queries: dict[str, str] = Field(
        default_factory=_default_queries,
        description="Figures measured by SQL on the platform database: name -> a query "
        "returning one number.",
    )
    tables: list[str] = Field(
        default_factory=list,
        description="Tables whose row counts are tracked (default: every table in `public`).",
    )
    storage_paths: list[Path] = Field(
        default_factory=list,
        description="Directories whose total size is `storage_bytes` (default: the "
        "`backups.files` directories, else EVENTOPS_VAR_DIR).",
    )
    workers: int = Field(default=2, ge=0, description="Worker processes paid for.")
    costs: CostConfig = Field(default_factory=CostConfig)
    limits: list[CapacityLimit] = Field(default_factory=list)
    warn_within_days: float = Field(
        default=30, gt=0, description="A limit forecast closer than this opens a warning."
    )
    history: Duration = Field(
        default=timedelta(days=90), description="How much history the forecasts fit."
    )
    holdout: float = Field(
        default=0.25,
        gt=0,
        lt=1,
        description="Share of the newest samples held out to choose linear or Holt.",
    )
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)


class ReportsConfig(_Strict):
    """The weekly performance report (docs/reports.md)."""

    directory: Path | None = Field(
        default=None, description="Where reports are written (default: EVENTOPS_VAR_DIR/reports)."
    )
    keep: int = Field(default=52, ge=1, description="Reports kept; older ones are deleted.")
    response_time_slo_ms: float = Field(
        default=2000.0, gt=0, description="p95 target line drawn on the response-time chart."
    )
    uptime_target: float = Field(
        default=0.99, gt=0, le=1, description="Uptime target the report compares against."
    )
