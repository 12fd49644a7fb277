"""Process settings from the environment (prefix EVENTOPS_), and the config file they point at."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.config import ConfigError, EventopsConfig, field_path, load_config

ROOT = Path(__file__).resolve().parent.parent


def _package_version() -> str | None:
    try:
        return version("eventops")
    except PackageNotFoundError:
        return None


class Settings(BaseSettings):
    """Where the services are and how the processes behave.

    Secrets may come from the variable itself or from a file named by `<VAR>_FILE`
    (the Docker secrets convention), so they never have to sit in a compose file.
    """

    model_config = SettingsConfigDict(env_prefix="EVENTOPS_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of eventops' own Postgres; embedded if unset."
    )
    broker_url: str | None = Field(
        default=None, description="Redis URL of the Celery broker; embedded if unset."
    )
    platform_url: str | None = Field(
        default=None, description="Overrides `platform_url` of the config file."
    )
    config_file: Path = Field(
        default=ROOT / "config" / "eventops.yaml", description="The YAML config file to load."
    )
    var_dir: Path = Field(default=ROOT / "var", description="Embedded servers' data and logs.")
    probe_batch_size: int = Field(
        default=100, ge=1, le=5000, description="Probes per `probes.run_batch` task."
    )
    dispatch_limit: int = Field(
        default=20_000, ge=1, description="Most checks one dispatch tick claims."
    )
    platform_database_url: SecretStr | None = Field(
        default=None,
        description="The platform's Postgres, backed up and audited (read-only role is enough "
        "for audits; backups need pg_dump rights). The demo database under `eventops run`.",
    )
    backup_key: SecretStr | None = Field(
        default=None, description="Passphrase that encrypts backups at rest."
    )
    deadmans_switch_url: SecretStr | None = Field(
        default=None,
        description="Healthchecks-style ping URL (https://hc-ping.com/<uuid>), pinged every "
        "30 s while eventops' self-checks pass and at <url>/fail when one fails; unset: off.",
    )
    flower_user: str = Field(default="admin", description="Flower's basic-auth user name.")
    flower_password: SecretStr = Field(
        default=SecretStr("eventops"),
        description="Flower's basic-auth password (ASCII); the default is for a laptop only.",
    )
    sentry_dsn: SecretStr | None = Field(
        default=None, description="Sentry DSN; unset means Sentry is off and nothing is sent."
    )
    environment: str = Field(
        default="development", description="Sentry's environment (production, staging, ...)."
    )
    release: str | None = Field(
        default_factory=_package_version,
        description="Sentry's release; defaults to the installed package version.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token /metrics requires when set; unset, /metrics is open "
        "(it holds check names and counts, never secrets). Set it wherever /metrics is "
        "reachable beyond a trusted network.",
    )
    ingest_token: SecretStr | None = Field(
        default=None,
        description="Token the Web Vitals beacon endpoint (POST /ingest/vitals) requires, in "
        "the Authorization: Bearer header or, for navigator.sendBeacon, the `token` query "
        "parameter; unset, the endpoint refuses every beacon (401).",
    )
    metrics_check_series_limit: int = Field(
        default=1000,
        ge=0,
        description="Most checks exported one by one on /metrics (not-up checks first); "
        "counts by state and group always cover every check.",
    )
    dashboard_user: str = Field(default="admin", description="The dashboard's login name.")
    dashboard_password: SecretStr | None = Field(
        default=None,
        description="The dashboard's password; unset, a random one is generated once and kept "
        "in <var_dir>/dashboard.password (0600), and `eventops run` prints it.",
    )
    dashboard_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs the dashboard's session cookies; unset, a random one is "
        "generated once and kept in <var_dir>/dashboard.secret (0600). Changing it (or the "
        "password) logs everyone out.",
    )
    dashboard_public_url: str | None = Field(
        default=None,
        description="The address people open the dashboard at (https://ops.example.com); "
        "state changes (login, logout, acknowledge) must come from pages of this origin. "
        "Unset, only the address the dashboard is reached on directly is accepted (any "
        "loopback name when it listens on loopback); set it behind a proxy or a host name.",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or CIDRs of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto the dashboard believes (e.g. "
        "`10.0.0.0/8,127.0.0.1`); unset, it believes none and the client is the socket's "
        "peer (the login limiter counts per that address).",
    )
    log_format: Literal["json", "text"] = Field(
        default="text",
        description="Log line format of workers, beat, Flower and the CLI: `json` (one object "
        "per line with task_id, task_name and check; the container image's default) or `text`.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="WARNING",
        description="Log level of the CLI and Flower; workers and beat take --loglevel (INFO).",
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("flower_user", "flower_password")
    @classmethod
    def _ascii_credentials(cls, value: str | SecretStr) -> str | SecretStr:
        # Flower checks basic auth again behind our guard with hmac.compare_digest on text,
        # which raises TypeError (a 500 on every page) for anything but ASCII.
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not text.isascii():
            raise ValueError("must be ASCII (Flower's basic auth compares it as ASCII text)")
        return value

    @field_validator("dashboard_public_url")
    @classmethod
    def _http_origin(cls, url: str | None) -> str | None:
        if not url:
            return None
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises on a port out of range or not a number
        except ValueError:
            parts = parts._replace(scheme="")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL such as https://ops.example.com")
        return url

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            return value
        try:
            # strict=False: 10.1.2.3/8 means the network it lies in, as people write it.
            return [str(ipaddress.ip_network(str(item), strict=False)) for item in value]
        except ValueError as error:
            raise ValueError(f"not an address or CIDR: {error}") from None

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            # psycopg 3 is the driver we ship; plain URLs from Supabase or Heroku just work.
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        if not url.startswith("postgresql+psycopg://"):
            raise ValueError("must be a postgresql:// URL")
        return url

    @field_validator("broker_url")
    @classmethod
    def _redis_only(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "redis+socket://")):
            raise ValueError("must be a redis:// URL")
        return url

    def config_overrides(self) -> dict[str, Any]:
        return {"platform_url": self.platform_url} if self.platform_url else {}


class SettingsError(ConfigError):
    pass


def read_settings() -> Settings:
    """Read the environment; raise SettingsError naming each bad variable."""
    _apply_file_secrets()
    try:
        return Settings()
    except ValidationError as error:
        lines = []
        for item in error.errors():
            name = "EVENTOPS_" + field_path(tuple(item["loc"])).upper()
            lines.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
        raise SettingsError(lines) from None


def _apply_file_secrets() -> None:
    import os

    for key in list(os.environ):
        if key.startswith("EVENTOPS_") and key.endswith("_FILE") and key != "EVENTOPS_CONFIG_FILE":
            target = key.removesuffix("_FILE")
            if target not in os.environ:
                try:
                    os.environ[target] = Path(os.environ[key]).read_text().strip()
                except OSError as error:
                    raise SettingsError([f"{key}: cannot read {error.filename}"]) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return read_settings()


@lru_cache(maxsize=1)
def get_config() -> EventopsConfig:
    settings = get_settings()
    return load_config(settings.config_file, settings.config_overrides())
