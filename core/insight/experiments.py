"""A/B tests: conversion per variant, a two-proportion z-test of each variant against the
control, and a sample ratio mismatch (SRM) check that raises a warning incident.

SRM: the assigned users per variant are tested against the configured split with a
chi-square goodness-of-fit test; p below `srm_p` (0.001 by default, as Microsoft's and
Optimizely's experimentation guides use) means the assignment is broken and the results
cannot be trusted, whatever they say. The incident (`experiment-srm:<name>`) resolves when
the split is back within bounds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.incidents import Problem, raise_problem, resolve_problem
from core.insight import platform
from core.insight.stats import chi_square_goodness_of_fit, two_proportion_z
from models.config import EventopsConfig
from models.config_insight import ExperimentConfig
from models.insight import ExperimentResult

_COUNTS = """
SELECT variant, count(*), count(converted_at)
FROM experiment_assignments
WHERE experiment = %(experiment)s AND assigned_at <= %(end)s
GROUP BY variant
"""


@dataclass(frozen=True)
class VariantResult:
    variant: str
    users: int
    conversions: int
    rate: float | None
    expected_share: float
    z: float | None
    p_value: float | None
    significant: bool | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExperimentOutcome:
    experiment: str
    variants: list[VariantResult]
    srm_p_value: float | None
    srm: bool  # a sample ratio mismatch: do not trust the results
    unexpected_variants: dict[str, int]  # assigned to variants the config does not list

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def analyse(experiment: ExperimentConfig, counts: dict[str, tuple[int, int]]) -> ExperimentOutcome:
    """The figures of {variant: (users, conversions)} against the experiment's config."""
    control = experiment.control_variant
    control_users, control_conversions = counts.get(control, (0, 0))
    variants = []
    for name, share in experiment.variants.items():
        users, conversions = counts.get(name, (0, 0))
        z = p = None
        if name != control:
            tested = two_proportion_z(control_conversions, control_users, conversions, users)
            if tested is not None:
                z, p = tested
        variants.append(
            VariantResult(
                variant=name,
                users=users,
                conversions=conversions,
                rate=conversions / users if users else None,
                expected_share=share,
                z=z,
                p_value=p,
                significant=None if p is None else p < experiment.alpha,
            )
        )
    observed = [v.users for v in variants]
    srm_p = None
    if sum(observed) >= experiment.min_users:
        _, srm_p = chi_square_goodness_of_fit(observed, list(experiment.variants.values()))
    return ExperimentOutcome(
        experiment=experiment.name,
        variants=variants,
        srm_p_value=srm_p,
        srm=srm_p is not None and srm_p < experiment.srm_p,
        unexpected_variants={
            name: users for name, (users, _) in counts.items() if name not in experiment.variants
        },
    )


def fetch_counts(
    db: psycopg.Connection[Any], experiment: ExperimentConfig, end: datetime
) -> dict[str, tuple[int, int]]:
    return {
        variant: (int(users), int(conversions))
        for variant, users, conversions in platform.rows(
            db, _COUNTS, {"experiment": experiment.name, "end": end}
        )
    }


def fingerprint_for_srm(name: str) -> str:
    return f"experiment-srm:{name}"


def srm_problem(experiment: ExperimentConfig, outcome: ExperimentOutcome) -> Problem:
    total = sum(v.users for v in outcome.variants)
    observed = ", ".join(
        f"{v.variant} {v.users} ({100 * v.users / total:.1f}%)" for v in outcome.variants
    )
    configured = "/".join(f"{100 * v.expected_share:g}" for v in outcome.variants)
    return Problem(
        fingerprint=fingerprint_for_srm(experiment.name),
        title=f"{experiment.name}: sample ratio mismatch "
        f"(p = {outcome.srm_p_value:.2g} < {experiment.srm_p:g})",
        severity="warning",
        summary=f"Assigned users: {observed}; configured split {configured}. The assignment "
        "or the logging of one variant is broken: the experiment's results cannot be trusted "
        "until the split is back.",
        labels={"experiment": experiment.name, "group": "experiments", "severity": "warning"},
        category="data",
        impact="A/B test results are biased and must not be used for decisions.",
        subject=experiment.name,
    )


def store_outcome(
    session: Session,
    outcome: ExperimentOutcome,
    computed_for: datetime,
    now: datetime,
) -> None:
    rows = [
        {
            "experiment": outcome.experiment,
            "computed_for": computed_for,
            "srm_p_value": outcome.srm_p_value,
            "computed_at": now,
            **v.as_dict(),
        }
        for v in outcome.variants
    ]
    statement = insert(ExperimentResult).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            constraint="uq_experiment_results_key",
            set_={
                k: statement.excluded[k]
                for k in rows[0]
                if k not in ("experiment", "computed_for", "variant")
            },
        )
    )


def evaluate_experiment(
    session: Session,
    config: EventopsConfig,
    experiment: ExperimentConfig,
    counts: dict[str, tuple[int, int]],
    computed_for: datetime,
    now: datetime,
) -> ExperimentOutcome:
    """Analyse, store, and open or resolve the SRM incident."""
    outcome = analyse(experiment, counts)
    store_outcome(session, outcome, computed_for, now)
    if outcome.srm:
        raise_problem(session, srm_problem(experiment, outcome), config, now)
    elif outcome.srm_p_value is not None:
        resolve_problem(
            session,
            fingerprint_for_srm(experiment.name),
            config,
            now,
            why=f"the split matches the configuration again (p = {outcome.srm_p_value:.2g})",
        )
    return outcome


def latest_results(session: Session, name: str) -> list[ExperimentResult]:
    newest = session.scalar(
        select(ExperimentResult.computed_for)
        .where(ExperimentResult.experiment == name)
        .order_by(ExperimentResult.computed_for.desc())
        .limit(1)
    )
    if newest is None:
        return []
    return list(
        session.scalars(
            select(ExperimentResult)
            .where(ExperimentResult.experiment == name, ExperimentResult.computed_for == newest)
            .order_by(ExperimentResult.id)
        )
    )
