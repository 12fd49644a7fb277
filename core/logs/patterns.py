"""Error pattern analysis: group error messages by fingerprint, classify, catch bursts.

A message's template is the message with its variable parts replaced, the way Sentry's
grouping strips them: timestamps, URLs, e-mail addresses, UUIDs, IP addresses, file paths,
hex values, id-like tokens and numbers become `<datetime>`, `<url>`, `<email>`, `<uuid>`,
`<ip>`, `<path>`, `<hex>`, `<id>` and `<num>`. The fingerprint is a hash of (log kind,
service, template), so the same error from two services is two patterns.

Each analysis run reads the error entries ingested since the last run (a cursor on
`log_entries.id`) and classifies every pattern it sees:

- **new**: never seen before;
- **regressed**: seen again after someone marked it resolved (`eventops logs resolve`), or
  after `logs.patterns.quiet_period` (7 days by default) without a single occurrence;
- **recurring**: anything else seen again.

A pattern that is new or regressed (within `new_for` of that moment) and occurs
`burst_count` times within `burst_window` is an incident (`logs:pattern:<fingerprint>`); it
resolves once the pattern has been quiet for `resolve_after`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.incidents import Problem, raise_problem, resolve_problem
from core.metrics import record_metrics
from models.config import EventopsConfig
from models.config_reports import PatternsConfig
from models.logs import ErrorPattern, LogCursor, LogEntry
from models.tables import Incident

CURSOR = "patterns"
TEMPLATE_MAX = 500

# Order matters: the wider forms (a URL holds a path, an e-mail holds a host) go first.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?",
        ),
        "<datetime>",
    ),
    (re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()]+"), "<url>"),
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "<email>"),
    (
        re.compile(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        "<uuid>",
    ),
    (re.compile(r"\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b"), "<ip>"),
    (re.compile(r"\b([0-9a-fA-F]{1,4}:){3,7}[0-9a-fA-F]{1,4}\b"), "<ip>"),
    (re.compile(r"(?<![\w.<>])(/[\w.@%+~-]+){2,}/?"), "<path>"),
    (re.compile(r"\b[A-Za-z]:\\[^\s'\"]+"), "<path>"),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    # Hashes and request ids: long runs of hex digits with at least one digit and one letter.
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
    # Prefixed ids (Stripe's pi_..., cus_..., req_...) with a capital or a digit, so that
    # snake_case words such as user_deactivated stay.
    (re.compile(r"\b[a-z]{2,5}_(?=[A-Za-z0-9]*[A-Z0-9])[A-Za-z0-9]{10,}\b"), "<id>"),
    # Other ids: a token of 8+ word characters that holds a digit.
    (re.compile(r"\b(?=[A-Za-z_-]*\d)(?=\w*[A-Za-z])[\w-]{8,}\b"), "<id>"),
    # Numbers, keeping a unit glued to them: `30.5s` -> `<num>s`; `user42` stays as it is.
    (re.compile(r"(?<![\w<.])[-+]?\d+(\.\d+)?(?![\d.>])"), "<num>"),
)
_SPACES = re.compile(r"\s+")


def normalize(message: str) -> str:
    """The message with ids, numbers, addresses and paths replaced by placeholders."""
    template = message
    for pattern, placeholder in _RULES:
        template = pattern.sub(placeholder, template)
    return _SPACES.sub(" ", template).strip()[:TEMPLATE_MAX]


def fingerprint_for(kind: str, service: str, message: str) -> str:
    key = f"{kind}\x00{service}\x00{normalize(message)}"
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:20]


def is_error(level: str, patterns: PatternsConfig) -> bool:
    return level.lower() in {name.lower() for name in patterns.levels}


def problem_fingerprint(fingerprint: str) -> str:
    return f"logs:pattern:{fingerprint}"


_CATEGORY = {"security": "security", "business": "business"}


@dataclass
class AnalysisSummary:
    entries: int = 0
    new: int = 0
    recurring: int = 0
    regressed: int = 0
    incidents_opened: int = 0
    incidents_resolved: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended('eventops.logs.patterns', 0))")

_BURST = text(
    """
    SELECT coalesce(max(n), 0) FROM (
        SELECT count(*) OVER (
            ORDER BY at RANGE BETWEEN make_interval(secs => :window) PRECEDING AND CURRENT ROW
        ) AS n
        FROM log_entries WHERE fingerprint = :fingerprint AND at >= :since
    ) AS windows
    """
)


def max_burst(session: Session, fingerprint: str, since: datetime, window: timedelta) -> int:
    """The most occurrences of the pattern within any `window` since `since`."""
    return int(
        session.execute(
            _BURST,
            {"window": window.total_seconds(), "fingerprint": fingerprint, "since": since},
        ).scalar_one()
    )


def analyze(
    session: Session, config: EventopsConfig, now: datetime | None = None
) -> dict[str, Any]:
    """Classify the patterns of the error entries ingested since the last run."""
    now = now or utcnow()
    settings = config.logs.patterns
    summary = AnalysisSummary()
    if not session.execute(_LOCK).scalar():
        return {"skipped": "another pattern analysis is running"}
    cursor = session.get(LogCursor, CURSOR, with_for_update=True)
    if cursor is None:
        cursor = LogCursor(name=CURSOR, last_id=0, updated_at=now)
        session.add(cursor)
        session.flush()
    last_id = cursor.last_id
    top = session.scalar(select(func.max(LogEntry.id)).where(LogEntry.id > last_id))
    if top is None:
        _resolve_quiet(session, config, now, summary)
        return summary.as_dict()
    groups = session.execute(
        select(
            LogEntry.fingerprint,
            func.min(LogEntry.kind),
            func.min(LogEntry.service),
            func.count(),
            func.min(LogEntry.at),
            func.max(LogEntry.at),
            func.min(LogEntry.message),
        )
        .where(
            LogEntry.id > last_id,
            LogEntry.id <= top,
            LogEntry.fingerprint.is_not(None),
        )
        .group_by(LogEntry.fingerprint)
    ).all()
    touched: list[ErrorPattern] = []
    for fingerprint, kind, service, count, first_at, last_at, example in groups:
        assert fingerprint is not None
        summary.entries += count
        pattern = session.get(ErrorPattern, fingerprint, with_for_update=True)
        if pattern is None:
            pattern = ErrorPattern(
                fingerprint=fingerprint,
                kind=kind,
                service=service,
                template=normalize(example),
                example=example[:2000],
                first_seen=first_at,
                last_seen=last_at,
                occurrences=count,
                status="active",
                classification="new",
                regressions=0,
            )
            session.add(pattern)
            summary.new += 1
        else:
            resolved_then_seen = (
                pattern.status == "resolved"
                and pattern.resolved_at is not None
                and last_at > pattern.resolved_at
            )
            quiet_then_seen = first_at - pattern.last_seen > settings.quiet_period
            if resolved_then_seen or quiet_then_seen:
                pattern.classification = "regressed"
                pattern.status = "active"
                pattern.regressions += 1
                pattern.regressed_at = first_at
                summary.regressed += 1
            else:
                pattern.classification = "recurring"
                summary.recurring += 1
            pattern.last_seen = max(pattern.last_seen, last_at)
            pattern.first_seen = min(pattern.first_seen, first_at)
            pattern.occurrences += count
        touched.append(pattern)
    session.flush()
    for pattern in touched:
        if _raise_if_burst(session, config, pattern, now):
            summary.incidents_opened += 1
    cursor.last_id = top
    cursor.updated_at = now
    _resolve_quiet(session, config, now, summary)
    record_metrics(
        session,
        [
            ("log_error_patterns_new", "logs", summary.new, now),
            ("log_error_patterns_recurring", "logs", summary.recurring, now),
            ("log_error_patterns_regressed", "logs", summary.regressed, now),
            ("log_errors", "logs", summary.entries, now),
        ],
    )
    return summary.as_dict()


def _raise_if_burst(
    session: Session, config: EventopsConfig, pattern: ErrorPattern, now: datetime
) -> bool:
    settings = config.logs.patterns
    # New (or newly regressed) for `new_for`: a burst within that time is an incident.
    regressed = pattern.regressed_at is not None and pattern.regressed_at > pattern.first_seen
    since = pattern.regressed_at if regressed and pattern.regressed_at else pattern.first_seen
    if now - since > settings.new_for:
        return False
    count = max_burst(session, pattern.fingerprint, since, settings.burst_window)
    if count < settings.burst_count:
        return False
    minutes = settings.burst_window.total_seconds() / 60
    what = "regressed" if regressed else "new"
    problem = Problem(
        fingerprint=problem_fingerprint(pattern.fingerprint),
        title=f"{pattern.service}: {what} error burst ({count} in {minutes:g} min): "
        f"{pattern.template[:120]}",
        severity=settings.severity,
        summary=f"{what} {pattern.kind} error pattern {pattern.fingerprint} occurred {count} "
        f"times within {minutes:g} minutes (threshold {settings.burst_count}): "
        # The template, not a raw example: incidents go out to chat and e-mail channels, and a
        # raw line carries the e-mail addresses, ids and tokens the template strips.
        f"{pattern.template[:300]}",
        labels={
            "group": "logs",
            "service": pattern.service,
            "kind": pattern.kind,
            "pattern": pattern.fingerprint,
        },
        category=_CATEGORY.get(pattern.kind, "availability"),
        subject=pattern.service,
    )
    return raise_problem(session, problem, config, now) is not None


def _resolve_quiet(
    session: Session, config: EventopsConfig, now: datetime, summary: AnalysisSummary
) -> None:
    """Resolve burst incidents whose pattern has been quiet for `resolve_after`."""
    settings = config.logs.patterns
    open_fingerprints = session.scalars(
        select(Incident.fingerprint).where(
            Incident.fingerprint.like("logs:pattern:%"), Incident.status != "resolved"
        )
    ).all()
    for incident_fingerprint in open_fingerprints:
        pattern = session.get(ErrorPattern, incident_fingerprint.removeprefix("logs:pattern:"))
        if pattern is None or now - pattern.last_seen >= settings.resolve_after:
            why = f"no occurrence for {settings.resolve_after}"
            if resolve_problem(session, incident_fingerprint, config, now, why=why):
                summary.incidents_resolved += 1


def resolve_pattern(
    session: Session,
    fingerprint: str,
    config: EventopsConfig,
    by: str = "eventops",
    now: datetime | None = None,
) -> bool:
    """Mark a pattern fixed: seen again after this, it counts as regressed."""
    now = now or utcnow()
    pattern = session.get(ErrorPattern, fingerprint, with_for_update=True)
    if pattern is None:
        return False
    pattern.status = "resolved"
    pattern.resolved_at = now
    pattern.resolved_by = by
    resolve_problem(session, problem_fingerprint(fingerprint), config, now, why=f"fixed ({by})")
    return True


def pattern_rows(
    session: Session, limit: int = 50, status: str | None = None
) -> list[ErrorPattern]:
    query = select(ErrorPattern).order_by(ErrorPattern.last_seen.desc()).limit(limit)
    if status is not None:
        query = query.where(ErrorPattern.status == status)
    return list(session.scalars(query))
