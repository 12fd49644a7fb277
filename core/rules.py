"""The rule engine: `metric aggregate over window <op> threshold`, per subject, into incidents.

Each evaluation reads every rule's window with one grouped query per rule (never one per
check), compares each subject's value with the threshold, keeps per (rule, subject) state in
`rule_states`, and reports breaches and recoveries to the incident lifecycle
(`core.incidents`) as problems fingerprinted `rule:<rule>:<subject>`.

- `response_time`, `error_rate` and `uptime` are derived per check from its outcomes; any
  other metric name is read from the `metrics` table per subject, so a duty that writes a
  new metric (memory usage, registrations, Web Vitals) needs no change here.
- A subject with fewer than `min_samples` samples in the window gets no verdict: nothing
  opens or resolves, and its `for` and recovery progress stay where they were. That
  includes a subject with no samples at all (a disabled check, a worker that stopped
  reporting): its open incident stays open until a verdict says clear, or someone resolves
  it by hand.
"""

from __future__ import annotations

import math
import operator
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ARRAY, Float, Integer, Text, and_, bindparam, cast, func, select, text
from sqlalchemy.dialects.postgresql import TIMESTAMP, aggregate_order_by, array_agg
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from core.clock import utcnow
from core.incidents import Problem, raise_problem, resolve_problem
from core.pipeline import fingerprint_for_check
from core.rollups import Figures, window_figures
from models.config import EventopsConfig, RuleConfig
from models.config_retention import OutcomeRetentionConfig
from models.tables import Check, Incident, Metric, Outcome, RuleState

Action = Literal["open", "resolve"] | None

# Group label of subjects that are not checks (workers, the platform, ...).
NON_CHECK_GROUP = "rules"

_PERCENTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_RATES = ("error_rate", "uptime")

# One evaluation at a time: a second tick (two beats, a redelivered task) that finds the
# lock taken skips, rather than counting the same clear evaluation twice.
_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended('eventops.rules', 0))")

# Every evaluated subject's state in one statement per rule, however many subjects.
_UPSERT_STATES = text(
    """
    INSERT INTO rule_states
        (rule, subject, breaching_since, clear_evaluations, last_value, last_evaluated_at)
    SELECT :rule, s.subject, s.breaching_since, s.clear_evaluations, s.last_value, :now
    FROM unnest(:subjects, :breaching_since, :clear_evaluations, :last_value)
        AS s(subject, breaching_since, clear_evaluations, last_value)
    ON CONFLICT (rule, subject) DO UPDATE SET
        breaching_since = excluded.breaching_since,
        clear_evaluations = excluded.clear_evaluations,
        last_value = excluded.last_value,
        last_evaluated_at = excluded.last_evaluated_at
    """
).bindparams(
    bindparam("subjects", type_=ARRAY(Text)),
    bindparam("breaching_since", type_=ARRAY(TIMESTAMP(timezone=True))),
    bindparam("clear_evaluations", type_=ARRAY(Integer)),
    bindparam("last_value", type_=ARRAY(Float)),
    bindparam("now", type_=TIMESTAMP(timezone=True)),
)


@dataclass(frozen=True)
class SubjectState:
    """Where one (rule, subject) stands between evaluations: a `rule_states` row."""

    breaching_since: datetime | None = None
    clear_evaluations: int = 0
    last_value: float | None = None
    last_evaluated_at: datetime | None = None


@dataclass(frozen=True)
class CheckSubject:
    id: int
    group: str
    depends_on: tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    """One subject's window, aggregated: how many samples and what they come to."""

    subject: str
    samples: int
    value: float | None
    check: CheckSubject | None = None


def step(
    state: SubjectState,
    value: float | None,
    breaching: bool | None,
    *,
    now: datetime,
    for_: timedelta,
    recovery_evaluations: int,
    incident_open: bool,
) -> tuple[SubjectState, Action]:
    """One evaluation's effect on a subject; `breaching` None means no verdict.

    Breaching starts (or continues) the `for` clock and fires once it has run `for_`;
    a clear evaluation stops the clock and, while an incident is open, counts towards
    `recovery_evaluations` clear evaluations in a row, which resolve it.
    """
    if breaching is None:
        return replace(state, last_evaluated_at=now), None
    if breaching:
        since = state.breaching_since or now
        new = SubjectState(since, 0, value, now)
        return new, ("open" if not incident_open and now - since >= for_ else None)
    clear = state.clear_evaluations + 1 if incident_open else 0
    new = SubjectState(None, clear, value, now)
    return new, ("resolve" if incident_open and clear >= recovery_evaluations else None)


def evaluate_rules(
    session: Session, config: EventopsConfig, now: datetime | None = None
) -> dict[str, Any]:
    """Evaluate every rule once, in the caller's transaction.

    Returns {"rules", "subjects", "breaching", "opened": [incident ids], "resolved":
    [incident ids], "urgent"}; `urgent` is true when a critical incident opened, so the
    caller kicks the escalation sweeper rather than waiting for its tick. An evaluation at
    or before a subject's last one (a replay of the same tick) changes nothing for it.
    """
    now = now or utcnow()
    summary: dict[str, Any] = {
        "rules": 0,
        "subjects": 0,
        "breaching": 0,
        "opened": [],
        "resolved": [],
        "urgent": False,
    }
    if not config.rules:
        summary["resolved"] = _resolve_orphans(session, config, now)
        return summary
    if not session.scalar(_LOCK):
        summary["busy"] = True  # another evaluation is running; it does this work
        return summary
    open_subjects: dict[str, set[str]] = defaultdict(set)
    for rule_name, subject in session.execute(
        select(Incident.rule, Incident.subject).where(
            Incident.rule.in_([r.name for r in config.rules]),
            Incident.status != "resolved",
        )
    ):
        if rule_name is not None and subject is not None:
            open_subjects[rule_name].add(subject)
    for rule in config.rules:
        _evaluate_rule(session, rule, config, now, open_subjects[rule.name], summary)
        summary["rules"] += 1
    summary["resolved"] += _resolve_orphans(session, config, now)
    return summary


def _resolve_orphans(session: Session, config: EventopsConfig, now: datetime) -> list[int]:
    """Incidents of rules no longer in the config have nothing left to clear them."""
    orphans = session.scalars(
        select(Incident.fingerprint).where(
            Incident.rule.is_not(None),
            Incident.rule.not_in([r.name for r in config.rules]),
            Incident.status != "resolved",
        )
    ).all()
    resolved = []
    for fingerprint in orphans:
        incident_id = resolve_problem(
            session, fingerprint, config, now, why="its rule was removed from the config"
        )
        if incident_id is not None:
            resolved.append(incident_id)
    return resolved


def _evaluate_rule(
    session: Session,
    rule: RuleConfig,
    config: EventopsConfig,
    now: datetime,
    open_subjects: set[str],
    summary: dict[str, Any],
) -> None:
    samples = (
        outcome_samples(session, rule, now, config.retention)
        if rule.from_outcomes
        else table_samples(session, rule, now)
    )
    states = {
        row.subject: SubjectState(
            row.breaching_since, row.clear_evaluations, row.last_value, row.last_evaluated_at
        )
        for row in session.execute(
            select(
                RuleState.subject,
                RuleState.breaching_since,
                RuleState.clear_evaluations,
                RuleState.last_value,
                RuleState.last_evaluated_at,
            ).where(RuleState.rule == rule.name)
        )
    }
    compare = _COMPARE[rule.op]
    written: dict[str, SubjectState] = {}
    for sample in samples:
        summary["subjects"] += 1
        state = states.get(sample.subject, SubjectState())
        if state.last_evaluated_at is not None and state.last_evaluated_at >= now:
            continue  # this tick was already evaluated
        breaching = None
        if sample.value is not None and sample.samples >= rule.min_samples:
            breaching = compare(sample.value, rule.threshold)
            summary["breaching"] += breaching
        incident_open = sample.subject in open_subjects
        state, action = step(
            state,
            sample.value,
            breaching,
            now=now,
            for_=rule.for_,
            recovery_evaluations=rule.recovery_evaluations,
            incident_open=incident_open,
        )
        if action == "open" and sample.value is not None:
            problem = problem_for_rule(
                rule, sample, state.breaching_since or now, stricter_rules(rule, config)
            )
            incident_id = raise_problem(session, problem, config, now)
            open_subjects.add(sample.subject)
            if incident_id is not None:
                summary["opened"].append(incident_id)
                summary["urgent"] |= rule.severity == "critical"
        elif action == "resolve":
            incident_id = resolve_problem(
                session,
                fingerprint_for_rule(rule.name, sample.subject),
                config,
                now,
                why=f"{rule.name}: clear for {state.clear_evaluations} evaluations "
                f"({describe_value(rule, sample.value)})",
            )
            if incident_id is not None:
                open_subjects.discard(sample.subject)
                summary["resolved"].append(incident_id)
                state = replace(state, clear_evaluations=0)
            # Otherwise it is held open because it flaps: the count goes on, and the next
            # clear evaluation tries again.
        written[sample.subject] = state
    if written:
        session.execute(
            _UPSERT_STATES,
            {
                "rule": rule.name,
                "now": now,
                "subjects": list(written),
                "breaching_since": [s.breaching_since for s in written.values()],
                "clear_evaluations": [s.clear_evaluations for s in written.values()],
                "last_value": [s.last_value for s in written.values()],
            },
        )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _aggregate(
    aggregate: str,
    column: ColumnElement[Any] | InstrumentedAttribute[Any],
    newest_first: Sequence[ColumnElement[Any]],
) -> ColumnElement[Any]:
    if aggregate in _PERCENTILES:
        return func.percentile_cont(_PERCENTILES[aggregate]).within_group(column)
    if aggregate == "last":
        newest = array_agg(aggregate_order_by(column, *newest_first))
        return newest.filter(column.is_not(None))[1]
    return cast(getattr(func, aggregate)(column), Float)  # avg, min, max, sum, count


def outcome_samples(
    session: Session,
    rule: RuleConfig,
    now: datetime,
    retention: OutcomeRetentionConfig | None = None,
) -> list[Sample]:
    """Per enabled check in the rule's scope: its up and down outcomes in (now - window, now].

    Response time is the rule's aggregate of latencies over the window (a percentile, p95
    in the seed, not the last probe); error rate and uptime are the fractions of down and
    up outcomes. Missed slots (never probed) count for neither. One grouped query.

    A window at least `retention.rules_rollup_window_minutes` long (the 24 h uptime rule)
    is read from the rollups plus the raw edge instead (`rolled_up_samples`).
    """
    if (
        retention is not None
        and rule.aggregate != "last"
        and rule.window >= timedelta(minutes=retention.rules_rollup_window_minutes)
    ):
        return rolled_up_samples(session, rule, now)
    in_window = and_(
        Outcome.check_id == Check.id,
        Outcome.slot > now - rule.window,
        Outcome.slot <= now,
        Outcome.status.in_(("up", "down")),
    )
    samples: ColumnElement[Any]
    value: ColumnElement[Any]
    if rule.metric == "response_time":
        samples = func.count(Outcome.latency_ms)
        value = _aggregate(rule.aggregate, Outcome.latency_ms, [Outcome.slot.desc()])
    else:
        wanted = "down" if rule.metric == "error_rate" else "up"
        samples = func.count(Outcome.id)
        value = cast(func.count(Outcome.id).filter(Outcome.status == wanted), Float) / func.nullif(
            func.count(Outcome.id), 0
        )
    query = (
        select(
            Check.id,
            Check.name,
            Check.group_name,
            Check.depends_on,
            samples.label("samples"),
            value.label("value"),
        )
        .select_from(Check)
        .outerjoin(Outcome, in_window)
        .where(Check.enabled)
        .group_by(Check.id)
        .order_by(Check.name)
    )
    if rule.checks or rule.groups:
        query = query.where(Check.name.in_(rule.checks) | Check.group_name.in_(rule.groups))
    return [
        Sample(
            subject=row.name,
            samples=row.samples,
            value=_float(row.value),
            check=CheckSubject(row.id, row.group_name, tuple(row.depends_on or ())),
        )
        for row in session.execute(query)
    ]


def rolled_up_samples(session: Session, rule: RuleConfig, now: datetime) -> list[Sample]:
    """`outcome_samples` from the minute and hour rollups for the rolled-up part of the
    window and raw outcomes for its edges (core/rollups.py): the same counts, sums, minimum
    and maximum as the raw query; percentiles from the latency histograms (nearest rank,
    within 5%, where the raw query interpolates)."""
    query = (
        select(Check.id, Check.name, Check.group_name, Check.depends_on)
        .where(Check.enabled)
        .order_by(Check.name)
    )
    if rule.checks or rule.groups:
        query = query.where(Check.name.in_(rule.checks) | Check.group_name.in_(rule.groups))
    checks = session.execute(query).all()
    figures = window_figures(
        session,
        [c.id for c in checks],
        now - rule.window,
        now,
        histograms=rule.metric == "response_time" and rule.aggregate in _PERCENTILES,
    )
    samples = []
    for check in checks:
        f = figures.get(check.id, Figures())
        count: int
        value: float | None
        if rule.metric == "response_time":
            count = f.latency_count
            value = {
                "avg": f.latency_avg,
                "min": f.latency_min,
                "max": f.latency_max,
                "sum": f.latency_sum if count else None,
                "count": float(count),
            }.get(rule.aggregate)
            if rule.aggregate in _PERCENTILES:
                value = f.percentile(_PERCENTILES[rule.aggregate])
        else:
            count = f.probes
            value = f.error_rate if rule.metric == "error_rate" else f.uptime
        samples.append(
            Sample(
                subject=check.name,
                samples=count,
                value=value,
                check=CheckSubject(check.id, check.group_name, tuple(check.depends_on or ())),
            )
        )
    return samples


def table_samples(session: Session, rule: RuleConfig, now: datetime) -> list[Sample]:
    """Per subject: the rule's aggregate of the metric's samples in (now - window, now].
    Subjects the rule names that sent nothing are listed with no samples. One grouped query."""
    query = (
        select(
            Metric.subject,
            func.count().label("samples"),
            _aggregate(rule.aggregate, Metric.value, [Metric.at.desc(), Metric.id.desc()]).label(
                "value"
            ),
        )
        .where(Metric.name == rule.metric, Metric.at > now - rule.window, Metric.at <= now)
        .group_by(Metric.subject)
        .order_by(Metric.subject)
    )
    if rule.subjects:
        query = query.where(Metric.subject.in_(rule.subjects))
    found = {
        row.subject: Sample(
            row.subject, row.samples, None if row.value is None else float(row.value)
        )
        for row in session.execute(query)
    }
    silent = [Sample(subject, 0, None) for subject in rule.subjects if subject not in found]
    if rule.baseline is not None:
        return against_baseline(session, rule, now, [*found.values(), *silent])
    return [*found.values(), *silent]


def against_baseline(
    session: Session, rule: RuleConfig, now: datetime, current: list[Sample]
) -> list[Sample]:
    """Each subject's value divided by its baseline: the same aggregate over the `baseline`
    just before the window, (now - window - baseline, now - window]. A sum or count is taken
    per window length (a 7-day baseline of a 1-day sum is the average day). A subject with no
    baseline, or a zero one, gets no value, so no verdict."""
    assert rule.baseline is not None
    end = now - rule.window
    query = (
        select(
            Metric.subject,
            _aggregate(rule.aggregate, Metric.value, [Metric.at.desc(), Metric.id.desc()]).label(
                "value"
            ),
        )
        .where(Metric.name == rule.metric, Metric.at > end - rule.baseline, Metric.at <= end)
        .group_by(Metric.subject)
    )
    if rule.subjects:
        query = query.where(Metric.subject.in_(rule.subjects))
    past = {row.subject: _float(row.value) for row in session.execute(query)}
    per_window = rule.window / rule.baseline if rule.aggregate in ("sum", "count") else 1.0
    result = []
    for sample in current:
        base = past.get(sample.subject)
        value = None
        if sample.value is not None and base:
            value = sample.value / (base * per_window)
        result.append(replace(sample, value=value))
    return result


SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def stricter_rules(rule: RuleConfig, config: EventopsConfig) -> list[str]:
    """Rules on the same metric with a higher severity: their incident explains this one's."""
    return [
        other.name
        for other in config.rules
        if other.metric == rule.metric
        and SEVERITY_RANK[other.severity] < SEVERITY_RANK[rule.severity]
    ]


def fingerprint_for_rule(rule: str, subject: str) -> str:
    return f"rule:{rule}:{subject}"


def problem_for_rule(
    rule: RuleConfig, sample: Sample, breaching_since: datetime, stricter: Sequence[str] = ()
) -> Problem:
    """The problem a breach reports. On a check, the check's own down-incident and its
    dependencies' are its parents: while one is open, the breach is explained and pages
    nobody. So are the same subject's incidents of `stricter` rules (the critical rule on
    the same metric inhibits the warning, as Alertmanager's inhibit rules do)."""
    assert sample.value is not None
    labels = {"rule": rule.name, "subject": sample.subject}
    parents: list[str] = []
    if sample.check is not None:
        labels["group"] = sample.check.group
        labels["check"] = sample.subject
        parents = [fingerprint_for_check(sample.subject)] + [
            fingerprint_for_check(name) for name in sample.check.depends_on
        ]
    else:
        labels["group"] = NON_CHECK_GROUP
    parents += [fingerprint_for_rule(name, sample.subject) for name in stricter]
    threshold = describe_threshold(rule)
    summary = (
        f"{_measure(rule)} over the last {format_duration(rule.window)} is "
        f"{describe_value(rule, sample.value)} ({sample.samples} samples); "
        f"threshold {rule.op} {threshold}"
    )
    if rule.for_ > timedelta(0):
        summary += f", breaching since {breaching_since:%Y-%m-%d %H:%M:%S %Z}"
    return Problem(
        fingerprint=fingerprint_for_rule(rule.name, sample.subject),
        title=f"{sample.subject}: {_measure(rule)} {describe_value(rule, sample.value)} "
        f"{rule.op} {threshold}",
        severity=rule.severity,
        summary=summary,
        labels=labels,
        category=rule.category,
        impact=rule.description,
        check_id=sample.check.id if sample.check is not None else None,
        rule=rule.name,
        subject=sample.subject,
        escalate_after=rule.escalate_after,
        parents=parents,
    )


def _measure(rule: RuleConfig) -> str:
    """`response_time p95`, `error_rate`, `memory_usage avg`: the aggregate means nothing
    for the rates."""
    return rule.metric if rule.metric in _RATES else f"{rule.metric} {rule.aggregate}"


def describe_value(rule: RuleConfig, value: float | None) -> str:
    """A value in the rule's unit: `6120 ms`, `10%`, `0.85`."""
    if value is None:
        return "no value"
    if rule.baseline is not None:
        return f"{format_number(value * 100)}% of its {format_duration(rule.baseline)} baseline"
    if rule.metric == "response_time":
        return f"{format_number(value)} ms"
    if rule.metric in _RATES:
        return f"{format_number(value * 100)}%"
    return format_number(value)


def describe_threshold(rule: RuleConfig) -> str:
    if rule.metric in _RATES or rule.baseline is not None:
        return f"{format_number(rule.threshold * 100)}%"
    return format_number(rule.threshold)


def format_number(value: float) -> str:
    """Short and readable: 6120, 0.85, 99.5, 3."""
    if not math.isfinite(value):
        return str(value)
    if value == int(value) or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.4g}"


def format_duration(duration: timedelta) -> str:
    """`15m`, `1d`, `24h` is `1d`, `90s`."""
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{duration.total_seconds():g}s"
