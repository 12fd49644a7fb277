"""The YAML config's schema: checks, channels and routes, validated at the door."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def parse_duration(value: Any) -> timedelta:
    """Read `90`, `90s`, `5m`, `1h`, `250ms` or a timedelta; a bare number means seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str) and (match := _DURATION.match(value)):
        number, unit = match.groups()
        return timedelta(seconds=float(number) * _UNIT_SECONDS[unit])
    raise ValueError("must be a duration such as 30s, 5m or 1h")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckConfig(_Strict):
    """One HTTP health check of the platform."""

    name: str
    url: str = Field(description="Target URL; `{platform_url}` is replaced by the platform URL.")
    interval: Duration = Field(description="How often the check runs.")
    timeout: Duration = Field(description="The whole probe's deadline, body included.")
    alert_threshold: int = Field(
        default=1, ge=1, description="Consecutive failures that open an incident."
    )
    recovery_threshold: int = Field(
        default=2, ge=1, description="Consecutive successes that resolve the incident."
    )
    severity: Severity = "critical"
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expected_status: list[int] = Field(
        default_factory=lambda: list(range(200, 300)),
        description="HTTP statuses that count as up (default: any 2xx).",
    )
    max_body_bytes: int = Field(default=1_048_576, ge=0, le=64 * 1_048_576)
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("must be lower-case letters, digits, '.', '_' or '-' (max 63)")
        return name

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str) -> str:
        if not re.match(r"^(https?://|\{platform_url\})", url):
            raise ValueError("must start with http://, https:// or {platform_url}")
        return url

    @field_validator("interval")
    @classmethod
    def _interval_is_sane(cls, interval: timedelta) -> timedelta:
        if interval < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
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
    def _statuses_are_http(cls, statuses: list[int]) -> list[int]:
        if not statuses:
            raise ValueError("must list at least one status")
        for status in statuses:
            if not 100 <= status <= 599:
                raise ValueError(f"{status} is not an HTTP status")
        return statuses

    def resolved_url(self, platform_url: str) -> str:
        return self.url.replace("{platform_url}", platform_url.rstrip("/"))


class ChannelConfig(_Strict):
    """A notification channel: an Apprise URL, kept secret because it carries tokens."""

    name: str
    url: SecretStr = Field(description="Apprise URL (json://, slack://, mailto://, pagerduty://).")

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("must be lower-case letters, digits, '.', '_' or '-' (max 63)")
        return name

    @field_validator("url")
    @classmethod
    def _url_has_scheme(cls, url: SecretStr) -> SecretStr:
        if "://" not in url.get_secret_value():
            raise ValueError("must be an Apprise URL such as json://host/path")
        return url


class EscalationConfig(_Strict):
    """When a newly opened incident of each severity first notifies."""

    critical_delay: Duration = timedelta(0)
    warning_delay: Duration = timedelta(minutes=15)


class EventopsConfig(_Strict):
    """The whole config file."""

    platform_url: str = "http://127.0.0.1:8400"
    checks: list[CheckConfig] = Field(default_factory=list)
    channels: list[ChannelConfig] = Field(default_factory=list)
    routes: dict[Severity, list[str]] = Field(
        default_factory=dict, description="Channel names that each severity notifies."
    )
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)

    @field_validator("platform_url")
    @classmethod
    def _platform_url_is_http(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/")

    def cross_reference_problems(self) -> list[str]:
        """Problems that span fields: duplicate names and routes to unknown channels."""
        problems: list[str] = []
        for label, names in (
            ("checks", [c.name for c in self.checks]),
            ("channels", [c.name for c in self.channels]),
        ):
            seen: set[str] = set()
            for index, name in enumerate(names):
                if name in seen:
                    problems.append(f"{label}[{index}].name: duplicate name {name!r}")
                seen.add(name)
        known = {c.name for c in self.channels}
        for severity, channel_names in self.routes.items():
            for index, name in enumerate(channel_names):
                if name not in known:
                    problems.append(f"routes.{severity}[{index}]: unknown channel {name!r}")
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


def parse_config(data: Any, overrides: dict[str, Any] | None = None) -> EventopsConfig:
    """Validate already-parsed YAML; raise ConfigError with every problem found."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping of settings"])
    data = {**data, **(overrides or {})}
    try:
        config = EventopsConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None
    if problems := config.cross_reference_problems():
        raise ConfigError(problems)
    return config


def load_config(path: Path, overrides: dict[str, Any] | None = None) -> EventopsConfig:
    """Read and validate the YAML file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read ({error.strerror})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: is not UTF-8 text"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        reason = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError([f"{where}: {reason}"]) from None
    return parse_config(data, overrides)
