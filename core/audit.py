"""The audit trail: every action of eventops, hash-chained, anchored, verified.

Each row's hash is SHA-256 over the previous row's hash and the row's canonical content
(time, actor, action, subject, details), so changing, removing, adding or reordering a row
breaks the chain at that row. Appends are serialized by a transaction-scoped advisory lock:
two writers never read the same head and fork the chain, and ids follow chain order.

A chain can be rewritten wholesale by someone who can write the table and knows the
algorithm, so the head is anchored now and then outside the chain (the `audit_anchors` table
and a JSON-lines file under the var dir): rows up to an anchor must keep the hash they had.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.clock import utcnow
from models.compliance import AuditAnchor, AuditEntry, AuditSeal, ComplianceRun

GENESIS = "0" * 64
# pg_advisory_xact_lock key of the chain head ("AUDT" in ASCII).
LOCK_KEY = 0x41554454
ANCHOR_FILE = Path("audit") / "anchors.jsonl"
CHAIN_FINGERPRINT = "compliance:audit-chain"
# What the maintenance bypass of the append-only trigger is called (see migration 0003).
MAINTENANCE_SETTING = "eventops.audit_maintenance"


def _plain(details: dict[str, Any] | None) -> dict[str, Any]:
    """Details as JSONB will give them back: what is hashed is exactly what is stored."""
    plain: dict[str, Any] = json.loads(json.dumps(details or {}, default=str, allow_nan=False))
    return plain


def _numbers_as_stored(value: Any) -> Any:
    """JSONB keeps numbers as numerics: 1e16 comes back as the integer 10000000000000000,
    1.0 as the float 1.0. Whole floats hash as integers so both sides agree."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _numbers_as_stored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers_as_stored(item) for item in value]
    return value


def canonical(
    at: datetime, actor: str, action: str, subject: str | None, details: dict[str, Any]
) -> str:
    """One row's content as sorted, compact JSON, the time in UTC to the microsecond."""
    return json.dumps(
        {
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": _numbers_as_stored(details),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def chain_hash(
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    subject: str | None,
    details: dict[str, Any],
) -> str:
    content = canonical(at, actor, action, subject, details)
    return hashlib.sha256(f"{prev_hash}\n{content}".encode()).hexdigest()


@dataclass(frozen=True)
class Appended:
    id: int
    hash: str


def audit(
    session: Session,
    actor: str,
    action: str,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
    *,
    at: datetime | None = None,
) -> Appended:
    """Append one row to the audit log in the caller's transaction.

    `action` is a dotted verb (`incident.acknowledge`, `silence.create`, `task.run`),
    `subject` what it acted on (`incident:12`). The lock is held until the caller commits,
    so keep the transaction short after this call.
    """
    at = at or utcnow()
    details = _plain(details)
    session.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
    prev_hash = (
        session.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)) or GENESIS
    )
    digest = chain_hash(prev_hash, at, actor, action, subject, details)
    entry_id = session.execute(
        insert(AuditEntry)
        .values(
            at=at,
            actor=actor,
            action=action,
            subject=subject,
            details=details,
            prev_hash=prev_hash,
            hash=digest,
        )
        .returning(AuditEntry.id)
    ).scalar_one()
    return Appended(entry_id, digest)


def audit_now(
    actor: str,
    action: str,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> Appended:
    """Append in a transaction of its own (for callers without a session: CLI, shell)."""
    from models.db import session_scope

    with session_scope() as session:
        return audit(session, actor, action, subject, details)


def audit_apart(
    session: Session,
    actor: str,
    action: str,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> Appended:
    """Append and commit at once on the session's database, outside its transaction: for
    long operations (a restore) that must not hold the chain's lock while they run."""
    with Session(bind=session.get_bind()) as apart, apart.begin():
        return audit(apart, actor, action, subject, details)


# --- config changes ---------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_config(session: Session, path: Path, actor: str = "eventops") -> bool:
    """Audit the config file when its content differs from the last one recorded (or none
    was). Returns whether a `config.changed` row was written."""
    digest = file_sha256(path)
    last = session.execute(
        select(AuditEntry.details)
        .where(AuditEntry.action == "config.changed")
        .order_by(AuditEntry.id.desc())
        .limit(1)
    ).scalar()
    previous = last.get("sha256") if last else None
    if previous == digest:
        return False
    audit(
        session,
        actor,
        "config.changed",
        str(path),
        {"sha256": digest, "previous_sha256": previous},
    )
    return True


# --- verification -----------------------------------------------------------------------------


@dataclass
class ChainReport:
    """What verification found: ok, or the first bad row and how it is bad."""

    ok: bool
    rows: int
    last_id: int | None
    last_hash: str | None
    first_bad_id: int | None = None
    tampering: str | None = None  # edited | deleted | inserted | reordered | rewritten
    problem: str | None = None
    anchors_checked: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, [])}


@dataclass(frozen=True)
class Anchor:
    at: datetime
    last_id: int
    last_hash: str
    rows: int
    source: str  # table | file


def _find_by_hash(session: Session, digest: str) -> int | None:
    return session.scalar(select(AuditEntry.id).where(AuditEntry.hash == digest).limit(1))


def _next_id_after(session: Session, row_id: int) -> int | None:
    return session.scalar(select(func.min(AuditEntry.id)).where(AuditEntry.id > row_id))


def _broken_link(
    session: Session, row: Any, previous: tuple[int, str] | None
) -> tuple[int, str, str]:
    """Row `row` does not link to the row before it: say which row is first bad and how."""
    pointed = _find_by_hash(session, row.prev_hash) if row.prev_hash != GENESIS else None
    prev_id = previous[0] if previous else 0
    if row.prev_hash == GENESIS:
        first = _next_id_after(session, 0) or row.id
        return (
            first,
            "inserted",
            f"row {row.id} claims to start the chain, but rows come before it: "
            f"row {first} was inserted",
        )
    if pointed is None:
        if row.id > prev_id + 1:
            return (
                prev_id + 1,
                "deleted",
                f"rows {prev_id + 1}..{row.id - 1} are missing: row {row.id} links to a row "
                "that no longer exists",
            )
        return (
            prev_id,
            "rewritten",
            f"row {prev_id} was rewritten with a fresh hash: row {row.id} links to the hash "
            "it had before",
        )
    if pointed > row.id:
        return (
            row.id,
            "reordered",
            f"row {row.id} belongs after row {pointed}: rows were reordered",
        )
    first = _next_id_after(session, pointed) or row.id
    return (
        first,
        "inserted",
        f"row {row.id} links to row {pointed}, so rows {first}..{prev_id} were inserted",
    )


def read_file_anchors(var_dir: Path | None, unreadable: list[str] | None = None) -> list[Anchor]:
    """The file's anchors. A line that is not an anchor (torn by a crash mid-write, or
    damaged) is skipped and described in `unreadable`: verification still holds the chain
    to every other anchor instead of failing on the file."""
    if var_dir is None:
        return []
    path = var_dir / ANCHOR_FILE
    if not path.exists():
        return []
    anchors = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            anchor = Anchor(
                at=datetime.fromisoformat(data["at"]),
                last_id=int(data["last_id"]),
                last_hash=str(data["last_hash"]),
                rows=int(data["rows"]),
                source="file",
            )
            if anchor.at.tzinfo is None:
                raise ValueError("its time has no time zone")
        except (ValueError, KeyError, TypeError) as error:
            if unreadable is not None:
                reason = f"{type(error).__name__}: {error}"[:200]
                unreadable.append(f"{path} line {number + 1} is not an anchor ({reason})")
            continue
        anchors.append(anchor)
    return anchors


def _table_anchors(session: Session) -> list[Anchor]:
    return [
        Anchor(a.at, a.last_id, a.last_hash, a.rows, "table")
        for a in session.scalars(select(AuditAnchor).order_by(AuditAnchor.id))
    ]


# Plain rows, streamed: ORM objects would pile up in the session's identity map.
_ROWS = select(
    AuditEntry.id,
    AuditEntry.at,
    AuditEntry.actor,
    AuditEntry.action,
    AuditEntry.subject,
    AuditEntry.details,
    AuditEntry.prev_hash,
    AuditEntry.hash,
).order_by(AuditEntry.id)


def sealed_digest(session: Session, through_id: int, batch: int = 5000) -> str:
    """SHA-256 over every row up to `through_id`, exactly as stored (bad rows included)."""
    digest = hashlib.sha256()
    query = _ROWS.where(AuditEntry.id <= through_id).execution_options(yield_per=batch)
    for row in session.execute(query):
        content = canonical(row.at, row.actor, row.action, row.subject, row.details)
        digest.update(f"{row.id}|{row.prev_hash}|{row.hash}|{content}\n".encode())
    return digest.hexdigest()


def latest_seal(session: Session) -> AuditSeal | None:
    return session.scalars(select(AuditSeal).order_by(AuditSeal.id.desc()).limit(1)).first()


def verify_chain(session: Session, var_dir: Path | None = None, batch: int = 5000) -> ChainReport:
    """Walk the chain in id order from the latest seal (or the start); stop at the first bad
    row; then hold it to the anchors written after that seal."""
    rows = 0
    previous: tuple[int, str] | None = None
    seen_hash: dict[int, str] = {}
    unreadable: list[str] = []
    anchors = [*_table_anchors(session), *read_file_anchors(var_dir, unreadable)]
    seal = latest_seal(session)
    query = _ROWS
    if seal is not None:
        if sealed_digest(session, seal.through_id, batch) != seal.sealed_digest:
            return ChainReport(
                False,
                0,
                None,
                None,
                seal.through_id,
                "rewritten",
                f"rows up to {seal.through_id} changed after they were sealed "
                f"({seal.at.isoformat()} by {seal.by})",
            )
        if seal.through_id:
            previous = (seal.through_id, seal.through_hash)
        anchors = [a for a in anchors if a.at >= seal.at]  # older ones saw the old chain
        query = _ROWS.where(AuditEntry.id > seal.through_id)
    anchored_ids = {a.last_id for a in anchors}
    for row in session.execute(query.execution_options(yield_per=batch)):
        rows += 1
        expected_prev = previous[1] if previous else GENESIS
        if row.prev_hash != expected_prev:
            first, kind, problem = _broken_link(session, row, previous)
            return ChainReport(False, rows, row.id, row.hash, first, kind, problem)
        digest = chain_hash(row.prev_hash, row.at, row.actor, row.action, row.subject, row.details)
        if digest != row.hash:
            return ChainReport(
                False,
                rows,
                row.id,
                row.hash,
                row.id,
                "edited",
                f"row {row.id} ({row.action}) no longer matches its hash: it was edited",
            )
        if row.id in anchored_ids:
            seen_hash[row.id] = row.hash
        previous = (row.id, row.hash)
    report = ChainReport(
        True,
        rows,
        previous[0] if previous else None,
        previous[1] if previous else None,
        notes=unreadable,
    )
    last_id = previous[0] if previous else 0
    for anchor in sorted(anchors, key=lambda a: a.last_id):
        report.anchors_checked += 1
        if anchor.last_id > last_id:
            report.ok = False
            report.first_bad_id = last_id + 1
            report.tampering = "deleted"
            report.problem = (
                f"rows {last_id + 1}..{anchor.last_id} are missing: the {anchor.source} anchor "
                f"of {anchor.at.isoformat()} saw the chain reach row {anchor.last_id}"
            )
            return report
        actual = seen_hash.get(anchor.last_id)
        if actual is None:
            report.ok = False
            report.first_bad_id = anchor.last_id
            report.tampering = "deleted"
            report.problem = f"anchored row {anchor.last_id} ({anchor.source} anchor) is gone"
            return report
        if actual != anchor.last_hash:
            report.ok = False
            report.first_bad_id = anchor.last_id
            report.tampering = "rewritten"
            report.problem = (
                f"row {anchor.last_id} no longer has the hash its {anchor.source} anchor of "
                f"{anchor.at.isoformat()} recorded: the chain up to it was rewritten"
            )
            return report
    return report


class NothingToSeal(ValueError):
    pass


def seal(
    session: Session,
    by: str,
    reason: str,
    var_dir: Path | None,
    now: datetime | None = None,
) -> AuditSeal:
    """Accept a broken chain as it is now, after people investigated it: the rows so far are
    sealed (their digest recorded), the acceptance is audited, a fresh anchor is written, and
    verification starts over from here. Refused when the chain verifies or without a reason."""
    if not reason.strip():
        raise ValueError("say why the break is accepted (reason)")
    now = now or utcnow()
    session.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
    report = verify_chain(session, var_dir)
    if report.ok:
        raise NothingToSeal("the audit chain verifies: there is nothing to accept")
    head = session.execute(
        select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    through_id, through_hash = (head.id, head.hash) if head else (0, GENESIS)
    sealed = AuditSeal(
        at=now,
        by=by,
        reason=reason,
        through_id=through_id,
        through_hash=through_hash,
        sealed_digest=sealed_digest(session, through_id),
        report=report.summary(),
    )
    session.add(sealed)
    session.flush()
    audit(
        session,
        by,
        "audit.break-accepted",
        f"audit_log:{report.first_bad_id}",
        {"reason": reason, "through_id": through_id, "found": report.summary()},
        at=now,
    )
    anchor(session, var_dir, now)
    return sealed


def anchor(session: Session, var_dir: Path | None, now: datetime | None = None) -> Anchor | None:
    """Record the chain's head in `audit_anchors` and in the anchor file. Nothing new since
    the last anchor: nothing written, None returned."""
    now = now or utcnow()
    head = session.execute(
        select(AuditEntry.id, AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
    ).first()
    if head is None:
        return None
    last_anchor = session.scalar(select(func.max(AuditAnchor.last_id)))
    if last_anchor is not None and last_anchor >= head.id:
        return None
    count = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    session.add(AuditAnchor(at=now, last_id=head.id, last_hash=head.hash, rows=count))
    session.flush()
    if var_dir is not None:
        path = var_dir / ANCHOR_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {"at": now.isoformat(), "last_id": head.id, "last_hash": head.hash, "rows": count}
        )
        with path.open("a+", encoding="utf-8") as out:
            # After a torn last line (a crash mid-write), start a fresh one.
            torn = out.tell() > 0 and not path.read_bytes().endswith(b"\n")
            out.write(("\n" if torn else "") + line + "\n")
    return Anchor(now, head.id, head.hash, count, "table")


def verify_and_alert(
    session: Session,
    config: Any,
    var_dir: Path | None,
    now: datetime | None = None,
) -> ChainReport:
    """Verify the chain, record the run, and raise (or resolve) the critical incident."""
    from core.incidents import Problem, raise_problem, resolve_problem

    now = now or utcnow()
    report = verify_chain(session, var_dir)
    session.add(ComplianceRun(check="audit-chain", at=now, ok=report.ok, summary=report.summary()))
    if report.ok:
        resolve_problem(session, CHAIN_FINGERPRINT, config, now, why="the audit chain verifies")
        return report
    raise_problem(
        session,
        Problem(
            fingerprint=CHAIN_FINGERPRINT,
            title=f"Audit log tampered: first bad row {report.first_bad_id}",
            severity="critical",
            summary=f"{report.tampering}: {report.problem}",
            labels={"category": "audit", "duty": "compliance"},
            category="security",
            impact="the record of what eventops and its operators did can no longer be trusted",
            subject=f"audit_log:{report.first_bad_id}",
        ),
        config,
        now,
    )
    return report


def entries(
    session: Session,
    *,
    limit: int = 50,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
) -> list[AuditEntry]:
    """The newest audit rows first, optionally filtered."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEntry.action.like(action.replace("*", "%")))
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if since:
        query = query.where(AuditEntry.at >= since)
    return list(session.scalars(query))


def maintenance(session: Session) -> None:
    """Let this transaction UPDATE or DELETE audit rows (the trigger's bypass). For repairs
    and tests only: the verifier reports whatever it breaks."""
    session.execute(text(f"SET LOCAL {MAINTENANCE_SETTING} = 'on'"))


def actions_in(session: Session, names: Iterable[str]) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action.in_(list(names)))
        )
        or 0
    )
