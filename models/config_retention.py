"""The `retention:` config section: how long eventops keeps its own outcomes and rollups."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OutcomeRetentionConfig(BaseModel):
    """Partitions, rollups and retention of eventops' own outcome data (docs/architecture.md,
    "Outcomes over time")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    raw_outcomes_days: int = Field(
        default=14,
        ge=1,
        description="Days of raw outcomes kept; older daily partitions are dropped once rolled up.",
    )
    minute_rollups_days: int = Field(
        default=90, ge=1, description="Days of per-minute rollups kept."
    )
    hour_rollups_days: int = Field(default=730, ge=1, description="Days of per-hour rollups kept.")
    partitions_ahead_days: int = Field(
        default=7,
        ge=1,
        le=90,
        description="Daily outcome partitions kept created ahead of today.",
    )
    settle_minutes: int = Field(
        default=2,
        ge=0,
        le=60,
        description="Minutes the rollup watermark lags now, so a bucket is rolled once its "
        "probes are in; later outcomes re-roll their bucket.",
    )
    rules_rollup_window_minutes: int = Field(
        default=60,
        ge=1,
        description="Outcome rules with a window at least this long read minute rollups for "
        "the rolled-up part of the window and raw outcomes for the rest.",
    )

    @model_validator(mode="after")
    def _rollups_outlive_raw(self) -> OutcomeRetentionConfig:
        # Re-rolling an hour needs its minutes; a minute needs its raw outcomes.
        if self.minute_rollups_days < self.raw_outcomes_days:
            raise ValueError(
                "minute_rollups_days must be at least raw_outcomes_days "
                "(minute rollups are what remains of dropped raw outcomes)"
            )
        if self.hour_rollups_days < self.minute_rollups_days:
            raise ValueError("hour_rollups_days must be at least minute_rollups_days")
        return self
