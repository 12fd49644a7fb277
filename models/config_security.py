"""The `security:` section of the config: where the platform's events come from and how each
detector judges them (docs/security.md explains every setting)."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from models.config_regex import postgres_regex_problem


def _duration(value: object) -> timedelta:
    # Imported when a value is parsed: models.config imports this module for its field.
    from models.config import parse_duration

    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]
Stream = Literal["auth", "api", "access"]

# The canonical fields of each stream; a source's `fields` maps them to its own columns/keys.
STREAM_FIELDS: dict[str, tuple[str, ...]] = {
    "auth": ("id", "at", "ip", "account", "outcome", "user_agent", "role", "country"),
    "api": ("id", "at", "ip", "key", "method", "path", "status", "user_agent", "country"),
    "access": ("id", "at", "account", "role", "resource", "action", "rows", "ip", "country"),
}
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "auth": ("at", "account", "outcome"),
    "api": ("at", "path", "status"),
    "access": ("at", "account", "resource", "action"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be positive")
    return value


def networks(values: list[str]) -> list[str]:
    """Addresses and ranges as networks (127.0.0.1/8 -> 127.0.0.0/8), as Postgres' cidr wants."""
    result = []
    for value in values:
        try:
            result.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR range") from None
    return result


class SourceConfig(_Strict):
    """One stream of platform events: a SQL query on the platform database or a JSON-lines
    file, with a mapping from the canonical field names to the source's own names."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$",
        description="Names the source in the events table and its high-water mark.",
    )
    stream: Stream = Field(description="auth (logins), api (requests) or access (data access).")
    query: str | None = Field(
        default=None,
        description="SELECT on the platform database (EVENTOPS_PLATFORM_DATABASE_URL); read "
        "incrementally by its `id` field, which must grow with every new row.",
    )
    file: Path | None = Field(
        default=None,
        description="A JSON-lines file, one event per line, read from the byte after the last "
        "one read (a file that shrank was rotated and is read from the start).",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical field -> the source's column or JSON key (unmapped fields use "
        "their canonical name).",
    )
    failure_values: list[str] = Field(
        default_factory=lambda: ["login_failure", "failure", "failed", "fail"],
        description="auth: values of `outcome` that mean a failed login.",
    )
    success_values: list[str] = Field(
        default_factory=lambda: ["login_success", "success", "ok"],
        description="auth: values of `outcome` that mean a successful login.",
    )
    batch: int = Field(default=50_000, ge=1, le=1_000_000, description="Most rows per read.")

    @model_validator(mode="after")
    def _one_kind_of_source(self) -> SourceConfig:
        if (self.query is None) == (self.file is None):
            raise ValueError("give exactly one of `query` or `file`")
        if self.query is not None and not re.match(r"^\s*(select|with)\b", self.query, re.I):
            raise ValueError("query must be a SELECT (or WITH ... SELECT)")
        unknown = sorted(set(self.fields) - set(STREAM_FIELDS[self.stream]))
        if unknown:
            raise ValueError(
                f"fields: unknown field(s) {', '.join(unknown)} for stream {self.stream!r} "
                f"(known: {', '.join(STREAM_FIELDS[self.stream])})"
            )
        return self

    def column(self, canonical: str) -> str:
        return self.fields.get(canonical, canonical)


class RecidiveConfig(_Strict):
    """fail2ban's recidive jail: many bans of one offender in `findtime` earn a long ban."""

    enabled: bool = Field(default=True, description="Off: repeat offenders only get increments.")
    maxretry: int = Field(default=5, ge=2, description="Bans within findtime that trigger it.")
    findtime: Duration = Field(default=timedelta(days=1), description="How far back bans count.")
    bantime: Duration = Field(default=timedelta(weeks=1), description="The recidive ban's length.")


class FailedLoginsConfig(_Strict):
    """fail2ban's jail semantics over the logins of every web node at once."""

    enabled: bool = Field(default=True, description="Off: no login is judged, nothing banned.")
    maxretry: int = Field(
        default=5, ge=1, description="Counted failures from one IP within findtime that ban it."
    )
    findtime: Duration = Field(
        default=timedelta(minutes=10), description="The window maxretry failures must fit in."
    )
    bantime: Duration = Field(default=timedelta(hours=1), description="First ban's length.")
    bantime_increment: bool = Field(
        default=True, description="fail2ban's bantime.increment: repeat offenders wait longer."
    )
    bantime_factor: float = Field(
        default=1.0, gt=0, description="bantime.factor: bantime * factor * 2^previous_bans."
    )
    bantime_maxtime: Duration = Field(
        default=timedelta(weeks=5), description="bantime.maxtime: the longest ban."
    )
    bantime_window: Duration = Field(
        default=timedelta(weeks=5), description="How far back previous bans count."
    )
    recidive: RecidiveConfig = Field(default_factory=RecidiveConfig)
    ignoreip: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="fail2ban's ignoreip: addresses and CIDR ranges never banned.",
    )
    stuffing_accounts: int = Field(
        default=5,
        ge=2,
        description="Distinct accounts among an IP's counted failures that make its ban "
        "credential stuffing (critical) rather than brute force (warning).",
    )
    account_maxretry: int = Field(
        default=10, ge=1, description="Failures on one account within account_findtime ..."
    )
    account_min_ips: int = Field(
        default=5, ge=2, description="... from at least this many IPs: a distributed attack."
    )
    account_findtime: Duration = Field(
        default=timedelta(hours=1), description="The account jail's window."
    )
    account_bantime: Duration = Field(
        default=timedelta(minutes=30),
        description="How long an account under distributed attack is locked (or challenged).",
    )
    webhook_url: str | None = Field(
        default=None, description="POSTed a JSON body for every ban and unban (optional)."
    )

    @field_validator("findtime", "bantime", "account_findtime", "account_bantime")
    @classmethod
    def _durations_positive(cls, value: timedelta) -> timedelta:
        return _positive(value)

    @field_validator("ignoreip")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return networks(values)

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must be an http:// or https:// URL")
        return url


class ApiAbuseConfig(_Strict):
    """Request rates per key and per IP against their own EWMA baseline, error bursts,
    enumeration."""

    enabled: bool = Field(default=True, description="Off: API requests are not judged.")
    bucket: Duration = Field(default=timedelta(minutes=5), description="Counting interval.")
    ewma_alpha: float = Field(
        default=0.1, gt=0, lt=1, description="Weight of the newest bucket in the baseline."
    )
    z_threshold: float = Field(default=4.0, gt=0, description="Standard scores above: abuse.")
    min_requests: int = Field(
        default=20, ge=1, description="Fewer requests in a bucket never count as abuse."
    )
    min_stddev: float = Field(
        default=2.0, gt=0, description="Floor of the baseline's deviation (new or steady keys)."
    )
    warmup_buckets: int = Field(
        default=12, ge=0, description="Buckets a key's baseline learns before z-scores count."
    )
    new_key_requests: int = Field(
        default=100, ge=1, description="Until then, requests in a bucket that are abuse."
    )
    error_statuses: list[int] = Field(
        default_factory=lambda: [401, 403, 429], description="Answers counted as errors."
    )
    error_burst: int = Field(
        default=20, ge=1, description="error_statuses answers to one key/IP in a bucket."
    )
    enumeration_ids: int = Field(
        default=15,
        ge=2,
        description="Distinct numeric ids under one path in a bucket, mostly consecutive.",
    )
    enumeration_not_found: int = Field(
        default=20, ge=1, description="Or this many distinct paths answered 404."
    )
    ignoreip: list[str] = Field(
        default_factory=list, description="Probes and partners never judged (CIDRs)."
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: timedelta) -> timedelta:
        return _positive(value)

    @field_validator("ignoreip")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        return networks(values)


class DataAccessConfig(_Strict):
    """Data breach detection on the data access log."""

    enabled: bool = Field(default=True, description="Off: data access is not judged.")
    permissions: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description="role -> table (or `*`) -> allowed actions (or `*`). Roles not listed are "
        "not judged on permissions.",
    )
    bucket: Duration = Field(default=timedelta(hours=1), description="Bulk counting interval.")
    ewma_alpha: float = Field(
        default=0.1, gt=0, lt=1, description="Weight of the newest bucket in the baseline."
    )
    z_threshold: float = Field(default=4.0, gt=0, description="Standard scores above: bulk.")
    min_rows: int = Field(
        default=30, ge=1, description="Fewer rows in a bucket are never a bulk read."
    )
    min_stddev: float = Field(default=2.0, gt=0, description="Floor of the baseline's deviation.")
    warmup_buckets: int = Field(
        default=12, ge=0, description="Buckets an actor's baseline learns before z-scores count."
    )
    new_actor_rows: int = Field(
        default=50, ge=1, description="Until then, rows in a bucket that are a bulk read."
    )
    working_hours: str = Field(
        default="07:00-20:00",
        pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$",
        description="Local time (the config's timezone); access outside is unusual.",
    )
    unusual_hours_roles: list[str] = Field(
        default_factory=lambda: ["admin"], description="Roles judged on their hours."
    )
    unusual_hours_min: int = Field(
        default=5, ge=1, description="Accesses in a bucket outside working hours that count."
    )
    new_network_roles: list[str] = Field(
        default_factory=lambda: ["admin"],
        description="Roles whose logins from a new network or country are findings.",
    )
    network_prefix_v4: int = Field(
        default=16, ge=8, le=32, description="IPv4 prefix length of a network."
    )
    network_prefix_v6: int = Field(
        default=48, ge=16, le=128, description="IPv6 prefix length of a network."
    )


class SignaturesConfig(_Strict):
    """Known attack signatures in request paths and user agents (case-insensitive Postgres
    regexes)."""

    enabled: bool = Field(default=True, description="Off: no signature is looked for.")
    extra: dict[str, str] = Field(
        default_factory=dict,
        description="More signatures: name -> regex over the decoded path; a built-in name "
        "(sql_injection, xss, path_traversal, recon) replaces the built-in.",
    )
    scanner_agents: str | None = Field(
        default=None, description="Regex over the user agent (default: a built-in list)."
    )
    bucket: Duration = Field(default=timedelta(hours=1), description="One finding per IP per.")

    @field_validator("extra")
    @classmethod
    def _regexes(cls, extra: dict[str, str]) -> dict[str, str]:
        for name, pattern in extra.items():
            if problem := postgres_regex_problem(pattern):
                raise ValueError(f"{name}: bad regular expression ({problem})")
        return extra

    @field_validator("scanner_agents")
    @classmethod
    def _agents_regex(cls, pattern: str | None) -> str | None:
        if pattern is not None and (problem := postgres_regex_problem(pattern)):
            raise ValueError(f"bad regular expression ({problem})")
        return pattern


class SecurityConfig(_Strict):
    """Security event detection (docs/security.md)."""

    enabled: bool = Field(default=True, description="Off: the security tick does nothing.")
    sources: list[SourceConfig] = Field(default_factory=list)
    settle: Duration = Field(
        default=timedelta(minutes=1),
        description="Detectors judge events older than this, so late log lines from other "
        "nodes are in before a window is closed.",
    )
    first_lookback: Duration = Field(
        default=timedelta(days=1), description="How far back the very first run looks."
    )
    keep_events: Duration = Field(
        default=timedelta(days=35), description="Ingested events older than this are pruned."
    )
    failed_logins: FailedLoginsConfig = Field(default_factory=FailedLoginsConfig)
    api_abuse: ApiAbuseConfig = Field(default_factory=ApiAbuseConfig)
    data_access: DataAccessConfig = Field(default_factory=DataAccessConfig)
    signatures: SignaturesConfig = Field(default_factory=SignaturesConfig)

    @field_validator("first_lookback")
    @classmethod
    def _lookback(cls, value: timedelta) -> timedelta:
        return _positive(value)

    @model_validator(mode="after")
    def _events_outlive_the_windows(self) -> SecurityConfig:
        # The tick prunes events past keep_events after judging; the next windows still
        # count failures up to findtime back (and the buckets whole), so pruning those
        # would silently blind the jails.
        windows = {
            "failed_logins.findtime": self.failed_logins.findtime,
            "failed_logins.account_findtime": self.failed_logins.account_findtime,
            "api_abuse.bucket": self.api_abuse.bucket,
            "data_access.bucket": self.data_access.bucket,
            "signatures.bucket": self.signatures.bucket,
        }
        longest = max(windows, key=lambda name: windows[name])
        needed = windows[longest] + self.settle
        if self.keep_events < needed:
            raise ValueError(
                f"keep_events: {self.keep_events} is shorter than {longest} plus settle "
                f"({needed}): events would be pruned before the detectors have judged them"
            )
        return self

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        seen: set[str] = set()
        for index, source in enumerate(sources):
            if source.name in seen:
                raise ValueError(f"[{index}]: duplicate source name {source.name!r}")
            seen.add(source.name)
        return sources
