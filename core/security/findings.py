"""What every detector shares: findings written once per (detector, subject, window), the
incident each one raises, detector progress and per-key EWMA baselines."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.incidents import PAGING_KINDS, Problem, add_event, queue_opening, raise_problem
from models.config import EventopsConfig
from models.security import SecurityBaseline, SecurityDetectorState, SecurityFinding
from models.tables import Escalation, Incident

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass
class Finding:
    """One conclusion of a detector, before it is stored."""

    detector: str
    kind: str
    severity: str
    subject: str
    summary: str
    window_start: datetime
    window_end: datetime
    evidence: dict[str, Any] = field(default_factory=dict)
    # A suspected data breach: its incident is labelled category=data_breach, which starts
    # the breach-notification clock (core/compliance/breach.py).
    breach: bool = False

    @property
    def fingerprint(self) -> str:
        # One incident per detector and subject: repeats update it rather than open more.
        # Breaches get their own (`security:breach:...`), apart from the subject's warnings.
        if self.breach:
            return f"security:breach:{self.detector}:{self.subject}"
        return f"security:{self.detector}:{self.subject}"


def jsonable(value: Any) -> Any:
    """Evidence as plain JSON: datetimes as ISO strings, addresses as text."""
    return json.loads(json.dumps(value, default=str))


def record_findings(
    session: Session, findings: list[Finding], config: EventopsConfig, now: datetime
) -> list[tuple[int, bool]]:
    """Store each finding (a re-run of the same window updates it, never adds one) and
    raise its incident. Returns (finding id, new?) per finding, in order."""
    results: list[tuple[int, bool]] = []
    for finding in findings:
        evidence = jsonable(finding.evidence)
        row = session.execute(
            insert(SecurityFinding)
            .values(
                detector=finding.detector,
                kind=finding.kind,
                severity=finding.severity,
                subject=finding.subject,
                summary=finding.summary,
                evidence=evidence,
                window_start=finding.window_start,
                window_end=finding.window_end,
                first_seen=now,
                last_seen=now,
            )
            .on_conflict_do_update(
                constraint="uq_security_findings_natural_key",
                set_={"last_seen": now},
            )
            .returning(SecurityFinding.id, SecurityFinding.incident_id, text("xmax = 0"))
        ).one()
        finding_id, incident_id, inserted = row[0], row[1], bool(row[2])
        if inserted:
            incident_id = raise_incident(session, finding, config, now)
            session.execute(
                update(SecurityFinding)
                .where(SecurityFinding.id == finding_id)
                .values(incident_id=incident_id)
            )
        results.append((finding_id, inserted))
    return results


def raise_incident(
    session: Session, finding: Finding, config: EventopsConfig, now: datetime
) -> int:
    """Open (or join) the detector+subject incident and put the finding on its timeline."""
    problem = Problem(
        fingerprint=finding.fingerprint,
        title=f"security: {finding.kind.replace('_', ' ')} from {finding.subject}",
        severity=finding.severity,
        summary=finding.summary,
        labels={
            "group": "security",
            "category": "data_breach" if finding.breach else "security",
            "detector": finding.detector,
            "kind": finding.kind,
            "subject": finding.subject,
        },
        category="security",
        subject=finding.subject,
    )
    incident_id = raise_problem(session, problem, config, now)
    if incident_id is None:
        incident_id = session.scalar(
            select(Incident.id).where(
                Incident.fingerprint == problem.fingerprint, Incident.status != "resolved"
            )
        )
        assert incident_id is not None
        add_event(session, incident_id, now, "finding", detail=finding.summary)
        raise_severity(session, incident_id, finding.severity, config, now)
    return incident_id


def raise_severity(
    session: Session, incident_id: int, severity: str, config: EventopsConfig, now: datetime
) -> None:
    """A finding more severe than the open incident it joins raises the incident to its
    severity, and an open (unacknowledged) one is paged again under the higher policy: a
    scanner's info incident must not swallow the critical injection that follows it."""
    incident = session.get(Incident, incident_id, with_for_update=True)
    if incident is None or SEVERITY_RANK[severity] <= SEVERITY_RANK.get(incident.severity, 0):
        return
    was = incident.severity
    incident.severity = severity
    incident.labels = {**incident.labels, "severity": severity}
    add_event(session, incident_id, now, "promoted", detail=f"{was} -> {severity}: a new finding")
    if incident.status != "open":
        return  # acknowledged: the people on it see the event; nothing more to page
    session.execute(
        update(Escalation)
        .where(
            Escalation.incident_id == incident_id,
            Escalation.state == "pending",
            Escalation.kind.in_(PAGING_KINDS),
        )
        .values(state="cancelled")
    )
    queue_opening(session, incident, config, now, kind="promoted")


def incident_event(
    session: Session, incident_id: int, now: datetime, kind: str, evidence: dict[str, Any]
) -> None:
    add_event(session, incident_id, now, kind, detail=json.dumps(jsonable(evidence)))


# -- progress ----------------------------------------------------------------------------


def get_cursor(session: Session, name: str) -> str | None:
    return session.scalar(
        select(SecurityDetectorState.cursor).where(SecurityDetectorState.name == name)
    )


def set_cursor(
    session: Session,
    name: str,
    cursor: str | None,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    values: dict[str, Any] = {"name": name, "cursor": cursor, "updated_at": now}
    values["details"] = details or {}
    session.execute(
        insert(SecurityDetectorState)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["name"],
            set_={"cursor": cursor, "updated_at": now, "details": values["details"]},
        )
    )


def detector_window(
    session: Session,
    detector: str,
    now: datetime,
    settle: timedelta,
    first_lookback: timedelta,
    bucket: timedelta | None = None,
    cap: datetime | None = None,
) -> tuple[datetime, datetime]:
    """(since, until]: from the end of the last judged window to `now - settle` (or `cap`,
    where a lagging source is complete up to), floored to whole buckets for the bucketed
    detectors (a bucket is judged once, complete)."""
    until = now - settle if cap is None else min(now - settle, cap)
    if bucket is not None:
        until = floor_time(until, bucket)
    cursor = get_cursor(session, f"detector:{detector}")
    since = datetime.fromisoformat(cursor) if cursor else until - first_lookback
    if bucket is not None:
        since = floor_time(since, bucket)
    return since, until


def floor_time(at: datetime, bucket: timedelta) -> datetime:
    epoch = datetime(2000, 1, 1, tzinfo=at.tzinfo)
    return at - (at - epoch) % bucket


# -- baselines -----------------------------------------------------------------------------


@dataclass
class Baseline:
    mean: float
    variance: float
    samples: int
    last_bucket: datetime | None


def load_baselines(session: Session, detector: str, keys: list[str]) -> dict[str, Baseline]:
    rows = session.execute(
        select(SecurityBaseline).where(
            SecurityBaseline.detector == detector, SecurityBaseline.key.in_(keys)
        )
    ).scalars()
    return {r.key: Baseline(r.mean, r.variance, r.samples, r.last_bucket) for r in rows}


def save_baselines(session: Session, detector: str, baselines: dict[str, Baseline]) -> None:
    rows = [
        {
            "detector": detector,
            "key": key,
            "mean": b.mean,
            "variance": b.variance,
            "samples": b.samples,
            "last_bucket": b.last_bucket,
        }
        for key, b in baselines.items()
        if b.last_bucket is not None
    ]
    for start in range(0, len(rows), 2000):
        chunk = rows[start : start + 2000]
        stmt = insert(SecurityBaseline).values(chunk)
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["detector", "key"],
                set_={
                    "mean": stmt.excluded.mean,
                    "variance": stmt.excluded.variance,
                    "samples": stmt.excluded.samples,
                    "last_bucket": stmt.excluded.last_bucket,
                },
            )
        )


def decay(baseline: Baseline, buckets_without: int, alpha: float) -> None:
    """Buckets with nothing are zeros: the mean shrinks by (1 - alpha) each, the variance
    takes in the distance to zero as it goes (done in closed form past a few hundred)."""
    for _ in range(min(buckets_without, 200)):
        diff = -baseline.mean
        baseline.mean += alpha * diff
        baseline.variance = (1 - alpha) * (baseline.variance + alpha * diff * diff)
    if buckets_without > 200:
        baseline.mean *= (1 - alpha) ** (buckets_without - 200)
        baseline.variance *= (1 - alpha) ** (buckets_without - 200)


def observe(baseline: Baseline, value: float, alpha: float) -> None:
    """West's exponentially weighted mean and variance."""
    diff = value - baseline.mean
    baseline.mean += alpha * diff
    baseline.variance = (1 - alpha) * (baseline.variance + alpha * diff * diff)
    baseline.samples += 1


def zscore(baseline: Baseline | None, value: float, min_stddev: float) -> float:
    mean = baseline.mean if baseline else 0.0
    variance = baseline.variance if baseline else 0.0
    return (value - mean) / max(math.sqrt(max(variance, 0.0)), min_stddev)


def judge_buckets(
    session: Session,
    detector: str,
    counts: list[tuple[str, datetime, float]],
    bucket: timedelta,
    alpha: float,
    z_threshold: float,
    floor: float,
    min_stddev: float,
    warmup: int = 0,
    warmup_floor: float = 0.0,
) -> list[tuple[str, datetime, float, float, float]]:
    """Walk (key, bucket, value) in time order against each key's EWMA baseline.

    Returns (key, bucket, value, baseline mean, z) for every bucket above both the z-score
    threshold and the absolute floor. A key with fewer than `warmup` buckets learnt has no
    baseline worth the name yet: it is judged only against `warmup_floor`, so a fresh
    install (or a new partner) is not a flood of findings. A bucket at or before the
    baseline's last one (a re-run) is judged but not learnt twice.
    """
    keys = sorted({key for key, _, _ in counts})
    baselines = load_baselines(session, detector, keys)
    flagged: list[tuple[str, datetime, float, float, float]] = []
    for key, at, value in sorted(counts, key=lambda c: (c[1], c[0])):
        baseline = baselines.get(key)
        if baseline is None:
            baseline = baselines[key] = Baseline(0.0, 0.0, 0, None)
        relearn = baseline.last_bucket is None or at > baseline.last_bucket
        if relearn and baseline.last_bucket is not None:
            gap = round((at - baseline.last_bucket) / bucket) - 1
            decay(baseline, gap, alpha)
        mean = baseline.mean
        z = zscore(baseline, value, min_stddev)
        if baseline.samples < warmup:
            anomalous = value >= max(floor, warmup_floor)
        else:
            anomalous = z >= z_threshold and value >= floor
        if anomalous:
            flagged.append((key, at, value, mean, z))
        if relearn:
            # An anomaly teaches only up to the threshold: a burst cannot make itself normal
            # at once, while a key that really grew is learnt over a few buckets.
            std = max(math.sqrt(max(baseline.variance, 0.0)), min_stddev)
            observe(baseline, min(value, mean + z_threshold * std), alpha)
            baseline.last_bucket = at
    save_baselines(session, detector, baselines)
    return flagged


def merge_by_window(findings: list[Finding]) -> list[Finding]:
    """One finding per (subject, window start), the natural key: kinds found for one subject in
    one bucket fold into the most severe one, keeping every kind's evidence."""
    merged: dict[tuple[str, datetime], Finding] = {}
    for finding in findings:
        key = (finding.subject, finding.window_start)
        first = merged.get(key)
        if first is None:
            finding.evidence["kinds"] = [finding.kind]
            merged[key] = finding
            continue
        first.evidence["kinds"].append(finding.kind)
        first.evidence[finding.kind] = finding.evidence
        first.summary += "; " + finding.summary
        first.breach = first.breach or finding.breach
        if SEVERITY_RANK[finding.severity] > SEVERITY_RANK[first.severity]:
            first.severity, first.kind = finding.severity, finding.kind
    return list(merged.values())
