"""The YAML config's schema: checks, channels and routes, validated at the door."""

from __future__ import annotations

import gc
import ipaddress
import itertools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from models.columns import rows_problems, unstorable_text
from models.config_compliance import ComplianceConfig
from models.config_insight import InsightConfig
from models.config_maintenance import MaintenanceConfig
from models.config_regex import regex_problem
from models.config_reports import CapacityConfig, LogsConfig, ReportsConfig
from models.config_retention import OutcomeRetentionConfig
from models.config_security import SecurityConfig
from models.config_yaml import YamlProblem, read_config_file
from models.tables import Check

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")
Category = Literal["availability", "performance", "capacity", "security", "data", "business"]
Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
Aggregate = Literal["last", "avg", "min", "max", "sum", "count", "p50", "p90", "p95", "p99"]
# Metrics the rule engine derives from outcomes; any other name is read from the metrics table.
OUTCOME_METRICS = ("response_time", "error_rate", "uptime")
_MATCHER = re.compile(r"^([a-z_]+)(=~|!~|!=|=)(.*)$")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
# Workers add and subtract durations to and from now (a rule's window and baseline, an
# escalation's delay, a ban): past about 2,000 years Python's datetime ends (year 1 to 9999)
# and the rule or sweeper raises OverflowError at every tick. A century is longer than
# anything a config means, and leaves room for a few durations added together.
MAX_DURATION = timedelta(days=36_500)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_CHECK_URL = re.compile(r"^(https?://|\{platform_url\})")
# The dispatcher adds a check's interval to timestamps in SQL, and Postgres' end at the year
# 294276: a billion-day interval is "timestamp out of range" at every claim. A check that runs
# less often than yearly is a mistake.
MAX_CHECK_INTERVAL = timedelta(days=365)
ANY_2XX = tuple(range(200, 300))


def parse_duration(value: Any) -> timedelta:
    """Read `90`, `90s`, `5m`, `1h`, `250ms` or a timedelta; a bare number means seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        return _seconds(value)
    if isinstance(value, str):
        return _duration_text(value)
    raise ValueError("must be a duration such as 30s, 5m or 1h")


@lru_cache(maxsize=1024)
def _duration_text(text: str) -> timedelta:
    # Remembered: 100,000 checks repeat a handful of durations ("1m", "5s").
    if match := _DURATION.match(text):
        number, unit = match.groups()
        return _seconds(float(number) * _UNIT_SECONDS[unit])
    raise ValueError("must be a duration such as 30s, 5m or 1h")


def _seconds(seconds: float) -> timedelta:
    # `not <=` refuses NaN with infinity, and numbers past timedelta's 999,999,999 days.
    if not abs(seconds) <= MAX_DURATION.total_seconds():
        raise ValueError(f"must be a finite duration of at most {MAX_DURATION.days}d (100 years)")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _slug(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError("must be lower-case letters, digits, '.', '_' or '-' (max 63)")
    return name


# Names of checks, rules and channels: they appear in fingerprints, labels and commands.
Slug = Annotated[str, AfterValidator(_slug)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckConfig(_Strict):
    """One HTTP health check of the platform."""

    name: Slug = Field(description="Unique name; used in incidents, labels and commands.")
    url: str = Field(description="Target URL; `{platform_url}` is replaced by the platform URL.")
    interval: Duration = Field(description="How often the check runs (1s to 365d).")
    timeout: Duration = Field(description="The whole probe's deadline, body included.")
    alert_threshold: int = Field(
        default=1, ge=1, description="Consecutive failures that open an incident."
    )
    recovery_threshold: int = Field(
        default=2, ge=1, description="Consecutive successes that resolve the incident."
    )
    severity: Severity = Field(default="critical", description="Severity of its incidents.")
    method: Literal["GET", "HEAD", "POST"] = Field(default="GET", description="HTTP method.")
    expected_status: tuple[int, ...] = Field(
        # One shared tuple, not a list of 100 statuses per check: 100,000 checks made 10
        # million list slots of the same default.
        default=ANY_2XX,
        description="HTTP statuses that count as up (default: any 2xx).",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=0,
        le=64 * 1_048_576,
        description="A longer body is a failure (body_too_large); bounds what a probe reads.",
    )
    enabled: bool = Field(default=True, description="A disabled check is kept but not probed.")
    group: str | None = Field(
        default=None, description="Service group for grouping and silences (default: the name)."
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="Checks this one needs: while one of them is down, this check's incidents "
        "are suppressed and linked to the parent's.",
    )
    category: Category = Field(
        default="availability", description="What kind of problem its incidents are."
    )
    impact: str | None = Field(default=None, description="What users lose when this fails.")

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str) -> str:
        if not _CHECK_URL.match(url):
            raise ValueError("must start with http://, https:// or {platform_url}")
        return url

    @field_validator("interval")
    @classmethod
    def _interval_is_sane(cls, interval: timedelta) -> timedelta:
        if interval < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        if interval > MAX_CHECK_INTERVAL:
            raise ValueError(f"must be at most {MAX_CHECK_INTERVAL.days}d")
        return interval

    @field_validator("timeout")
    @classmethod
    def _timeout_below_interval(cls, timeout: timedelta, info: ValidationInfo) -> timedelta:
        if timeout <= timedelta(0):
            raise ValueError("must be positive")
        interval = info.data.get("interval")
        if interval is not None and timeout >= interval:
            raise ValueError("must be less than interval")
        return timeout

    @field_validator("expected_status")
    @classmethod
    def _statuses_are_http(cls, statuses: tuple[int, ...]) -> tuple[int, ...]:
        if not statuses:
            raise ValueError("must list at least one status")
        for status in statuses:
            if not 100 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP status")
        return statuses

    @property
    def group_name(self) -> str:
        return self.group or self.name

    def resolved_url(self, platform_url: str) -> str:
        return self.url.replace("{platform_url}", platform_url.rstrip("/"))

    def row(self, platform_url: str) -> dict[str, Any]:
        """Its row in the checks table, as `eventops migrate` writes it (core.schedule)."""
        return {
            "name": self.name,
            "kind": "http",
            "url": self.resolved_url(platform_url),
            "method": self.method,
            "expected_status": self.expected_status,
            "interval_s": self.interval.total_seconds(),
            "timeout_s": self.timeout.total_seconds(),
            "max_body_bytes": self.max_body_bytes,
            "alert_threshold": self.alert_threshold,
            "recovery_threshold": self.recovery_threshold,
            "severity": self.severity,
            "enabled": self.enabled,
            "group_name": self.group_name,
            "depends_on": self.depends_on,
            "category": self.category,
            "impact": self.impact,
        }


# The config field each checks-table column comes from, where the names differ.
_CHECK_FIELD = {"interval_s": "interval", "timeout_s": "timeout", "group_name": "group"}
_ROWS_AT_ONCE = 10_000


class ChannelConfig(_Strict):
    """A notification channel: an Apprise URL, kept secret because it carries tokens."""

    name: Slug = Field(description="Unique name that policies and fallbacks refer to.")
    url: SecretStr = Field(description="Apprise URL (json://, slack://, mailto://, pagerduty://).")
    fallback: str | None = Field(
        default=None, description="Channel that gets the message after `fallback_after` failures."
    )

    @field_validator("url")
    @classmethod
    def _url_has_scheme(cls, url: SecretStr) -> SecretStr:
        value = url.get_secret_value()
        if "://" not in value:
            raise ValueError("must be an Apprise URL such as json://host/path")
        if not apprise_understands(value):
            # The URL carries tokens: the message names its scheme, never the URL.
            scheme = value.split("://", 1)[0]
            shown = repr(scheme) if re.fullmatch(r"[a-z0-9+.-]{1,20}", scheme) else "its scheme"
            raise ValueError(
                f"Apprise cannot use this URL ({shown} unknown, or a required part missing)"
            )
        return url


def apprise_understands(url: str) -> bool:
    import logging

    import apprise

    # Apprise logs the URL it could not parse; the URL is a secret.
    quiet = logging.getLogger("apprise")
    level, quiet.level = quiet.level, logging.CRITICAL + 1
    try:
        return apprise.Apprise.instantiate(url) is not None
    finally:
        quiet.level = level


def parse_matcher(text: str) -> tuple[str, str, str]:
    """`check=stripe`, `group!=db`, `check=~str.*`, `group!~pay.*` -> (label, op, value)."""
    match = _MATCHER.match(text.strip())
    if not match:
        raise ValueError(
            f"{text!r} is not a matcher like label=value, label!=value or label=~regex"
        )
    label, op, value = match.groups()
    if op in ("=~", "!~") and (problem := regex_problem(value)):
        raise ValueError(f"{text!r}: bad regular expression ({problem})")
    return label, op, value


def _check_matchers(matchers: list[str]) -> list[str]:
    for matcher in matchers:
        parse_matcher(matcher)
    return matchers


Matchers = Annotated[list[str], AfterValidator(_check_matchers)]


class RuleConfig(_Strict):
    """An alert rule: `metric aggregate over window <op> threshold` fires an incident."""

    name: Slug = Field(description="Unique name; part of the incident fingerprint.")
    metric: str = Field(
        description="response_time, error_rate or uptime (from outcomes), or any metric name "
        "written to the metrics table (memory_usage, user_registrations, ...)."
    )
    aggregate: Aggregate = Field(
        default="avg", description="How the window's samples become one value."
    )
    window: Duration = Field(
        default=timedelta(minutes=15), description="How far back the samples reach."
    )
    op: Comparison = Field(description="How the value compares with the threshold to fire.")
    threshold: float = Field(description="The value the aggregate is compared with.")
    severity: Severity = Field(description="Severity of the incident it opens.")
    checks: list[str] = Field(
        default_factory=list,
        description="Checks the rule applies to (outcome metrics; all if empty).",
    )
    groups: list[str] = Field(default_factory=list, description="Or the checks of these groups.")
    subjects: list[str] = Field(
        default_factory=list, description="Subjects of a table metric (all if empty)."
    )
    min_samples: int = Field(default=1, ge=1, description="Fewer samples: no verdict.")
    for_: Duration = Field(
        default=timedelta(0), alias="for", description="Must hold this long before it fires."
    )
    recovery_evaluations: int = Field(
        default=2, ge=1, description="Consecutive clear evaluations that resolve it."
    )
    escalate_after: Duration | None = Field(
        default=None, description="Delay before the first page (default: the policy's)."
    )
    category: Category = Field(
        default="performance", description="What kind of problem its incidents are."
    )
    description: str | None = Field(
        default=None, description="Shown in the incident and the notification."
    )
    baseline: Duration | None = Field(
        default=None,
        description="Compare with the past (metrics-table rules): the value becomes the "
        "window's aggregate divided by the same aggregate over the `baseline` just before the "
        "window (sum and count per window length), so `op: <` with `threshold: 0.8` means "
        "down 20%.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("window")
    @classmethod
    def _window_is_positive(cls, window: timedelta) -> timedelta:
        if window <= timedelta(0):
            raise ValueError("must be positive")
        return window

    @field_validator("baseline")
    @classmethod
    def _baseline_on_table_metrics(
        cls, baseline: timedelta | None, info: ValidationInfo
    ) -> timedelta | None:
        if baseline is not None:
            if baseline <= timedelta(0):
                raise ValueError("must be positive")
            if info.data.get("metric") in OUTCOME_METRICS:
                raise ValueError("applies to metrics-table metrics, not outcome metrics")
        return baseline

    @property
    def from_outcomes(self) -> bool:
        return self.metric in OUTCOME_METRICS


class StepConfig(_Strict):
    """One rung of an escalation chain: after this long, tell these channels."""

    after: Duration = Field(
        default=timedelta(0), description="Delay after the incident opened before this rung."
    )
    channels: list[str] = Field(min_length=1, description="Channels this rung notifies.")


class PolicyConfig(_Strict):
    """How incidents of one severity escalate."""

    steps: list[StepConfig] = Field(
        default_factory=list, description="The chain, in order; `after` counts from the opening."
    )
    repeat_every: Duration | None = Field(
        default=None, description="Remind the last step's channels this often until acknowledged."
    )
    promote_after: Duration | None = Field(
        default=None, description="Still firing after this long: becomes critical."
    )
    group_wait: Duration = Field(
        default=timedelta(0),
        description="Hold a group's first message this long to gather others into it.",
    )
    stakeholders: list[str] = Field(
        default_factory=list,
        description="Communication plan: channels told when it opens, is updated and resolves.",
    )
    digest: bool = Field(
        default=False, description="Send nothing at once; list incidents in the daily digest."
    )
    channels: list[str] = Field(
        default_factory=list, description="Digest channels (with `digest: true`)."
    )

    @field_validator("steps")
    @classmethod
    def _steps_in_order(cls, steps: list[StepConfig]) -> list[StepConfig]:
        for before, after in itertools.pairwise(steps):
            if after.after < before.after:
                raise ValueError("steps must be in order of `after`")
        return steps


def _default_policies() -> dict[Severity, PolicyConfig]:
    return {"critical": PolicyConfig(), "warning": PolicyConfig(), "info": PolicyConfig()}


class WeeklyWindow(_Strict):
    """A recurring maintenance window: every `day` from `start` for `duration`, local time."""

    name: str = Field(description="Unique name of the window.")
    matchers: Matchers = Field(
        min_length=1, description="Incidents whose labels match all of these are silenced."
    )
    day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = (
        Field(description="Day of the week it starts, local time.")
    )
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local time.")
    duration: Duration = Field(description="How long the window lasts.")


class NotificationConfig(_Strict):
    """How messages are grouped and retried."""

    group_by: list[str] = Field(
        default_factory=lambda: ["group"],
        description="Labels whose values make a group: one message per group per channel.",
    )
    fallback_after: int = Field(
        default=3, ge=1, description="Failed attempts before the channel's fallback is used."
    )
    channel_incident_after: int = Field(
        default=5, ge=1, description="Consecutive failures that open a channel's own incident."
    )
    digest_at: str = Field(
        default="09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Daily digest, local."
    )


class RetentionConfig(_Strict):
    """How many backups of each tier to keep (the newest per hour, day, ISO week, month)."""

    hourly: int = Field(default=24, ge=0, description="Newest backup of each of the last N hours.")
    daily: int = Field(default=7, ge=0, description="Newest backup of each of the last N days.")
    weekly: int = Field(default=4, ge=0, description="Newest of each of the last N ISO weeks.")
    monthly: int = Field(default=12, ge=0, description="Newest of each of the last N months.")


class FilesBackupConfig(_Strict):
    """A directory of uploaded files, backed up incrementally with a SHA-256 manifest."""

    name: str = Field(description="Unique name of this set of files.")
    directory: Path = Field(description="Directory whose files are backed up.")


class NetworkConfig(_Strict):
    """Where probes may go: the SSRF guard (core/netguard.py)."""

    allow_internal: list[str] = Field(
        default_factory=list,
        description="Internal addresses probes may reach: IPs, CIDR networks or host names. "
        "Every address that is not public (loopback, private, link-local such as the cloud "
        "metadata service, shared, reserved) is refused unless listed here; redirects too.",
    )

    @field_validator("allow_internal")
    @classmethod
    def _networks_or_host_names(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?", entry):
                    raise ValueError(
                        f"{entry!r} is neither an IP address, a CIDR network nor a host name"
                    ) from None
        return entries


class BackupsConfig(_Strict):
    """Backups of the platform database (its URL and the encryption key are settings:
    EVENTOPS_PLATFORM_DATABASE_URL and EVENTOPS_BACKUP_KEY)."""

    enabled: bool = Field(default=True, description="Take, verify and prune backups.")
    directory: Path | None = Field(
        default=None, description="Where backups are written (default: EVENTOPS_VAR_DIR/backups)."
    )
    rpo: Duration = Field(default=timedelta(hours=1), description="Recovery point objective.")
    rto: Duration = Field(default=timedelta(hours=4), description="Recovery time objective.")
    encrypt: bool = Field(default=True, description="Encrypt at rest with EVENTOPS_BACKUP_KEY.")
    key_tables: list[str] = Field(
        default_factory=list,
        description="Tables whose row counts and checksums a restore test compares "
        "(default: every table's row count, no checksums).",
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    files: list[FilesBackupConfig] = Field(default_factory=list)
    config_files: list[Path] = Field(
        default_factory=list, description="Configuration files to back up, secrets redacted."
    )
    pitr: bool = Field(
        default=False,
        description="Base backups and WAL archiving (needs a replication connection).",
    )


class EventopsConfig(_Strict):
    """The whole config file."""

    platform_url: str = Field(
        default="http://127.0.0.1:8400",
        description="Base URL of the monitored platform; `{platform_url}` in check URLs.",
    )
    timezone: str = Field(
        default="Pacific/Auckland", description="For the digest and maintenance windows."
    )
    checks: list[CheckConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    channels: list[ChannelConfig] = Field(default_factory=list)
    policies: dict[Severity, PolicyConfig] = Field(default_factory=_default_policies)
    notifications: NotificationConfig = Field(default_factory=NotificationConfig)
    maintenance_windows: list[WeeklyWindow] = Field(default_factory=list)
    backups: BackupsConfig = Field(default_factory=BackupsConfig)
    insight: InsightConfig = Field(
        default_factory=InsightConfig,
        description="Business KPIs, Web Vitals, funnels, adoption, feedback and A/B tests "
        "(docs/insight.md).",
    )
    security: SecurityConfig = Field(
        default_factory=SecurityConfig,
        description="Security event detection: sources, failed logins, API abuse, data access.",
    )
    maintenance: MaintenanceConfig = Field(
        default_factory=MaintenanceConfig,
        description="Infrastructure metrics, index/query/vacuum reports, self-monitoring.",
    )
    retention: OutcomeRetentionConfig = Field(
        default_factory=OutcomeRetentionConfig,
        description="Outcome partitions, rollups and how long each is kept.",
    )
    logs: LogsConfig = Field(
        default_factory=LogsConfig, description="Log ingestion, error patterns, rotation."
    )
    capacity: CapacityConfig = Field(
        default_factory=CapacityConfig, description="Capacity tracking, forecasts, limits."
    )
    reports: ReportsConfig = Field(
        default_factory=ReportsConfig, description="The weekly performance report."
    )
    compliance: ComplianceConfig = Field(
        default_factory=ComplianceConfig,
        description="Audit trail, access logging, privacy, breach clock, vulnerability scan.",
    )
    network: NetworkConfig = Field(default_factory=NetworkConfig)

    @field_validator("platform_url")
    @classmethod
    def _platform_url_is_http(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name

    @field_validator("policies")
    @classmethod
    def _every_severity_has_a_policy(
        cls, policies: dict[Severity, PolicyConfig]
    ) -> dict[Severity, PolicyConfig]:
        return {**_default_policies(), **policies}

    def cross_reference_problems(self) -> list[str]:
        """Problems that span fields: duplicate names, unknown channels and checks, cycles."""
        problems: list[str] = []
        for label, names in (
            ("checks", [c.name for c in self.checks]),
            ("rules", [r.name for r in self.rules]),
            ("channels", [c.name for c in self.channels]),
            ("maintenance_windows", [w.name for w in self.maintenance_windows]),
        ):
            seen: set[str] = set()
            for index, name in enumerate(names):
                if name in seen:
                    problems.append(f"{label}[{index}].name: duplicate name {name!r}")
                seen.add(name)
        channels = {c.name for c in self.channels}
        checks = {c.name for c in self.checks}
        groups = {c.group_name for c in self.checks}

        def unknown(path: str, names: list[str], known: set[str], what: str) -> None:
            for index, name in enumerate(names):
                if name not in known:
                    problems.append(f"{path}[{index}]: unknown {what} {name!r}")

        for severity, policy in self.policies.items():
            for index, step in enumerate(policy.steps):
                unknown(
                    f"policies.{severity}.steps[{index}].channels",
                    step.channels,
                    channels,
                    "channel",
                )
            unknown(f"policies.{severity}.stakeholders", policy.stakeholders, channels, "channel")
            unknown(f"policies.{severity}.channels", policy.channels, channels, "channel")
        for index, channel in enumerate(self.channels):
            fallback = channel.fallback
            if fallback is not None and (fallback == channel.name or fallback not in channels):
                problems.append(f"channels[{index}].fallback: unknown channel {fallback!r}")
        for index, check in enumerate(self.checks):
            # A check cannot depend on itself; asked per name, not with a set built per check
            # (`checks - {name}` made 100,000 checks quadratic: minutes).
            for position, parent in enumerate(check.depends_on):
                if parent == check.name or parent not in checks:
                    problems.append(
                        f"checks[{index}].depends_on[{position}]: unknown check {parent!r}"
                    )
        for index, rule in enumerate(self.rules):
            unknown(f"rules[{index}].checks", rule.checks, checks, "check")
            unknown(f"rules[{index}].groups", rule.groups, groups, "group")
        if cycle := self.dependency_cycle():
            problems.append(f"checks: depends_on forms a cycle ({' -> '.join(cycle)})")
        return problems

    def dependency_cycle(self) -> list[str] | None:
        """The first depends_on cycle found, as names from a check back to itself.

        A depth-first walk on a stack of its own: a chain of 100,000 checks each depending on
        the next is no RecursionError, and each check is walked once."""
        parents = {c.name: c.depends_on for c in self.checks}
        done: set[str] = set()
        for start in parents:
            if start in done:
                continue
            path = [start]
            on_path = {start}
            walks = [iter(parents[start])]
            while walks:
                parent = next(walks[-1], None)
                if parent is None:
                    name = path.pop()
                    on_path.discard(name)
                    done.add(name)
                    walks.pop()
                elif parent in on_path:
                    return [*path[path.index(parent) :], parent]
                elif parent not in done:
                    path.append(parent)
                    on_path.add(parent)
                    walks.append(iter(parents.get(parent, ())))
        return None

    def storage_problems(self) -> list[str]:
        """Values the database cannot store, checked against the columns they are written to
        (models/columns.py): `alert_threshold: 40000` in a smallint failed `migrate` alone."""
        problems = []
        # Rows in slices, so 100,000 checks never hold 100,000 row dicts at once.
        for first in range(0, len(self.checks), _ROWS_AT_ONCE):
            checks = self.checks[first : first + _ROWS_AT_ONCE]
            rows = [check.row(self.platform_url) for check in checks]
            problems += [
                f"checks[{first + index}].{_CHECK_FIELD.get(column, column)}: {reason}"
                for index, column, reason in rows_problems(Check.__table__, rows)  # type: ignore[arg-type]
            ]
        return problems

    def channel(self, name: str) -> ChannelConfig:
        return next(c for c in self.channels if c.name == name)


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds one `path: reason` line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def field_path(loc: tuple[int | str, ...]) -> str:
    """Turn pydantic's ('checks', 1, 'timeout') into `checks[1].timeout`."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not re.fullmatch(r"[A-Za-z_][\w-]*", part):
            # An unknown key that is empty or holds dots or spaces: quoted, so the path
            # still says unambiguously where it is.
            path += f"[{part!r}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def describe_validation_error(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "is required"
        lines.append(f"{field_path(tuple(item['loc']))}: {message}")
    return lines


def text_problems(data: Any) -> list[str]:
    """Strings anywhere in the config that Postgres cannot store (NUL, lone surrogates): any
    of them may reach a column (a rule's description becomes an incident's impact)."""
    try:
        # One pass in C for the common case of nothing wrong: \u0000 is how JSON writes NUL,
        # and a lone surrogate does not encode. Anything odd falls through to the walk.
        dumped = json.dumps(data, ensure_ascii=False, default=str)
        if "\\u0000" not in dumped:
            dumped.encode("utf-8")
            return []
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    problems = []
    seen: set[int] = set()  # YAML aliases share a list or mapping: walk it once
    pending: list[tuple[tuple[int | str, ...], Any]] = [((), data)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if problem := unstorable_text(item):
                problems.append(f"{field_path(path)}: {problem}")
        elif isinstance(item, dict | list) and id(item) not in seen:
            seen.add(id(item))
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, value in pairs:
                if isinstance(key, str) and (problem := unstorable_text(key)):
                    problems.append(f"{field_path(path)}: a key {problem}")
                    continue
                # A YAML key may be null, a date or a number: the path shows it as text.
                part = key if isinstance(key, str | int) else str(key)
                pending.append(((*path, part), value))
    return sorted(problems)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Validation makes millions of objects and no reference cycles: the cyclic garbage
    collector walked them again and again, half the time of 100,000 checks (bench/RESULTS.md)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def parse_config(data: Any, overrides: dict[str, Any] | None = None) -> EventopsConfig:
    """Validate already-parsed YAML; raise ConfigError with every problem found.

    What `config check` accepts is what start-up accepts (both come here through load_config)
    and what `migrate` can write: values are held to the columns they land in."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping of settings"])
    data = {**data, **(overrides or {})}
    with _collector_paused():
        problems = text_problems(data)
        try:
            config = EventopsConfig.model_validate(data)
        except ValidationError as error:
            raise ConfigError(problems + describe_validation_error(error)) from None
        problems += config.cross_reference_problems() + config.storage_problems()
    if problems:
        # Text that Postgres cannot store is found by both the walk and the column check.
        raise ConfigError(list(dict.fromkeys(problems)))
    return config


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> EventopsConfig:
    """Read and validate the YAML file at `path` (models/config_yaml.py says what is refused
    before validation: size, depth, duplicate keys, an empty file)."""
    try:
        data = read_config_file(path)
    except OSError as error:
        raise ConfigError([f"{path}: cannot read ({error.strerror})"]) from None
    except YamlProblem as problem:
        raise ConfigError([f"{problem.where(path)}: {problem.reason}"]) from None
    return parse_config(data, overrides)
