"""The `compliance:` section of the config: access logging, privacy, the breach clock and the
vulnerability scan (docs/compliance.md explains every setting)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def _duration(value: object) -> timedelta:
    # Imported when a value is parsed: models.config imports this module for its field.
    from models.config import parse_duration

    return parse_duration(value)


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _identifier(name: object) -> str:
    if not isinstance(name, str):
        raise ValueError("must be a table or column name")
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a plain SQL name (letters, digits, _, schema.table)")
    return name


Identifier = Annotated[str, BeforeValidator(_identifier)]
Regime = Literal["nz", "gdpr"]
VulnSeverity = Literal["critical", "high", "medium", "low"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccessLoggingConfig(_Strict):
    """Which platform tables hold personal information and where their access is logged."""

    personal_tables: list[Identifier] = Field(
        default_factory=lambda: ["users", "vendors", "bookings", "payments", "reviews"],
        description="Tables with personal information; each must show up in the access log.",
    )
    log_table: Identifier = Field(
        default="data_access_log", description="The platform's data access log table."
    )
    table_column: Identifier = Field(
        default="table_name", description="Its column naming the table that was accessed."
    )
    at_column: Identifier = Field(default="at", description="Its timestamp column.")
    window: Duration = Field(
        default=timedelta(days=7),
        description="A personal table with no access logged in this long is a gap.",
    )
    personal_columns: list[str] = Field(
        default_factory=lambda: [
            "email",
            "full_name",
            "phone",
            "address",
            "date_of_birth",
            "ip",
            "lat",
            "lon",
        ],
        description="Column names that mark a table as personal; such a table missing from "
        "`personal_tables` is a finding.",
    )
    ignore_tables: list[Identifier] = Field(
        default_factory=lambda: ["auth_events", "api_requests", "data_access_log"],
        description="Tables with personal columns that are logs themselves (kept under "
        "`retention`), not subject to access logging.",
    )


class RetentionRule(_Strict):
    """Personal data in `table` older than `keep` (by `column`) must be gone."""

    table: Identifier = Field(description="The platform table holding the personal data.")
    column: Identifier = Field(description="The timestamp that starts the retention period.")
    keep: Duration = Field(description="How long rows may be kept.")
    where: str | None = Field(
        default=None,
        description="Optional SQL condition limiting the rule (e.g. `status = 'cancelled'`).",
    )


class DataSubjectRequestsConfig(_Strict):
    """Where the platform records data subject requests (access, correction, deletion)."""

    table: Identifier = Field(
        default="data_subject_requests", description="The platform table of requests."
    )
    id_column: Identifier = Field(default="id", description="Its id column.")
    kind_column: Identifier = Field(
        default="kind", description="Its column with access, correction or deletion."
    )
    received_column: Identifier = Field(
        default="received_at", description="When the request was received (timestamptz)."
    )
    completed_column: Identifier = Field(
        default="completed_at", description="When it was answered; NULL while open."
    )
    regime_column: Identifier | None = Field(
        default="regime",
        description="Column naming the request's regime (nz or gdpr); NULL or no column: "
        "`default_regimes` apply.",
    )
    default_regimes: list[Regime] = Field(
        default_factory=lambda: list[Regime](["nz", "gdpr"]),
        description="Regimes applied when a request names none: the earliest deadline wins.",
    )
    warn_before: Duration = Field(
        default=timedelta(days=5),
        description="An open request this close to its deadline is a (medium) finding.",
    )
    nz_summer_period_ends: str = Field(
        default="01-15",
        pattern=r"^01-(0[1-9]|1\d|2\d|3[01])$",
        description="MM-DD in January when the Privacy Act's Christmas period ends (it starts "
        "25 December).",
    )


class BreachClockConfig(_Strict):
    """The notification clock started by a data breach incident."""

    matchers: list[str] = Field(
        default_factory=lambda: ["category=data_breach"],
        description="Label matchers (every one must hold) that make an incident a data breach.",
    )
    fingerprint_prefixes: list[str] = Field(
        default_factory=lambda: ["security:breach"],
        description="Or: incidents whose fingerprint starts with one of these.",
    )

    @field_validator("matchers")
    @classmethod
    def _matchers_parse(cls, matchers: list[str]) -> list[str]:
        from models.config import parse_matcher

        for matcher in matchers:
            parse_matcher(matcher)
        return matchers

    notify_within: Duration = Field(
        default=timedelta(hours=72),
        description="Time to notify the regulator (GDPR art. 33: 72 h; NZ: as soon as "
        "practicable, held to the same 72 h here).",
    )
    remind_at_left: list[Duration] = Field(
        default_factory=lambda: [timedelta(hours=48), timedelta(hours=24), timedelta(hours=6)],
        description="Reminders (incident events and pages) when this much time is left.",
    )


class VulnerabilityScanConfig(_Strict):
    """The weekly dependency scan against OSV advisories."""

    advisories: Path | None = Field(
        default=None,
        description="A directory of OSV JSON files or a .zip/.tar.gz of them (osv.dev's "
        "per-ecosystem all.zip); synced by an operator.",
    )
    python: bool = Field(default=True, description="Scan eventops' own Python environment.")
    python_paths: list[Path] = Field(
        default_factory=list,
        description="Other site-packages directories to scan (default: this interpreter's).",
    )
    npm_lockfiles: list[Path] = Field(
        default_factory=list, description="The platform's package-lock.json files (v1, v2, v3)."
    )
    online: bool = Field(
        default=False,
        description="Also ask the OSV API (api.osv.dev) when the machine has a route to it.",
    )
    incident_severity: VulnSeverity = Field(
        default="critical", description="Findings this severe or worse raise an incident."
    )


class ComplianceConfig(_Strict):
    """Audit trail and compliance: docs/compliance.md."""

    enabled: bool = Field(default=True, description="Run the compliance checks at all.")
    timezone: str = Field(
        default="Pacific/Auckland",
        description="The controller's time zone for GDPR month deadlines.",
    )
    access_logging: AccessLoggingConfig = Field(default_factory=AccessLoggingConfig)
    retention: list[RetentionRule] = Field(
        default_factory=list, description="Retention per table of personal data."
    )
    data_subject_requests: DataSubjectRequestsConfig = Field(
        default_factory=DataSubjectRequestsConfig
    )
    breach: BreachClockConfig = Field(default_factory=BreachClockConfig)
    vulnerabilities: VulnerabilityScanConfig = Field(default_factory=VulnerabilityScanConfig)
    reports_dir: Path | None = Field(
        default=None, description="Where monthly reports go (default: <var dir>/reports)."
    )

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}") from None
        return name
