"""Logical backups of the platform database (pg_dump custom format), their verification by
a full read, and restore tests into a scratch database that measure RPO and RTO."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import psycopg
from psycopg import sql
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.backups import jobs as job
from core.backups.crypto import CorruptBackup, decrypt_stream, decrypt_to_file, encrypt_file
from core.backups.tools import Conn, ToolError, find_tool, server_major
from core.clock import utcnow
from models.config import BackupsConfig
from models.tables import Backup, RestoreRun

log = logging.getLogger(__name__)

SessionFactory = Callable[[], AbstractContextManager[Session]]

LOGICAL_KINDS = ("hourly", "daily")
FORMAT = "pg_dump-custom"  # details["format"] of the rows this module writes
RESTORE_TEST = "restore-test"
# A running row whose heartbeat is older than the lease belongs to a dead worker.
LEASE = timedelta(minutes=2)
HEARTBEAT_EVERY_S = 30.0
LOCK_WAIT_TIMEOUT_MS = 120_000
NO_KEY = "EVENTOPS_BACKUP_KEY is not set"
_READ = 1 << 20

# Row text depends on these settings; pinning them makes checksums comparable between the
# source and a scratch restore (a database-level ALTER DATABASE SET is not restored).
_STABLE_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
    "SET lc_monetary = 'C'",
)

# Every user table (plain and partitioned), not those an extension owns (not dumped).
_USER_TABLES = """
    SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
      AND NOT EXISTS (
          SELECT 1 FROM pg_depend d
          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    ORDER BY 1, 2
"""

# The checksum of a table is an order-independent sum of 64-bit row hashes: one sequential
# scan, constant memory, no sort and no collation involved (an ordered string_agg would sort
# the table and hit the 1 GB text limit on a big one). Its cost is one more full read of
# each key table inside the dump's snapshot, about what pg_dump spends on it.
_CHECKSUM = "md5(coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint), 0)::text)"


class BackupError(Exception):
    """A backup, verification or restore test cannot proceed; the message says why."""


# --- table statistics (shared by backup and restore test) -------------------------------


def _pin_settings(db: psycopg.Connection) -> None:
    for statement in _STABLE_SETTINGS:
        db.execute(statement)


def _split_name(name: str) -> tuple[str, str]:
    schema, _, table = name.rpartition(".")
    return (schema or "public", table)


def user_tables(db: psycopg.Connection) -> dict[str, tuple[str, str]]:
    """Quoted name ("public.users") -> (schema, table) of every user table."""
    return {row[2]: (row[0], row[1]) for row in db.execute(_USER_TABLES)}


def table_stats(db: psycopg.Connection, table: tuple[str, str], checksum: bool) -> dict[str, Any]:
    """{"rows": n} and, if asked, {"checksum": md5} of one table, as seen by `db`'s snapshot."""
    ident = sql.Identifier(*table)
    if checksum:
        query = sql.SQL("SELECT count(*), " + _CHECKSUM + " FROM {} t").format(ident)
        row = db.execute(query).fetchone()
        assert row is not None
        return {"rows": int(row[0]), "checksum": row[1]}
    row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
    assert row is not None
    return {"rows": int(row[0])}


def snapshot_tables(
    db: psycopg.Connection, key_tables: list[str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Row counts of every user table and checksums of the key tables ("users" means
    "public.users"); also the key tables that do not exist."""
    _pin_settings(db)
    tables = user_tables(db)
    wanted = {_split_name(name) for name in key_tables}
    found = set(tables.values())
    missing = sorted(f"{s}.{t}" for s, t in wanted - found)
    stats = {name: table_stats(db, ident, ident in wanted) for name, ident in tables.items()}
    return stats, missing


def compare_tables(
    db: psycopg.Connection, recorded: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per recorded table: what the backup recorded, what `db` holds, and whether they match."""
    _pin_settings(db)
    present = user_tables(db)
    result: dict[str, dict[str, Any]] = {}
    for name, expected in sorted(recorded.items()):
        ident = present.get(name)
        if ident is None:
            result[name] = {"expected": expected, "found": None, "ok": False}
            continue
        found = table_stats(db, ident, "checksum" in expected)
        result[name] = {"expected": expected, "found": found, "ok": found == expected}
    return result


# --- helpers ------------------------------------------------------------------------------


def _scrub(message: str, *secrets_: str | None) -> str:
    for secret in secrets_:
        if secret:
            message = message.replace(secret, "***")
    return message


def _error_text(exc: BaseException, conn: Conn | None = None) -> str:
    text = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, ToolError | CorruptBackup | BackupError):
        text = f"{type(exc).__name__}: {text}"
    return _scrub(text, conn.password if conn else None)


def _tool_failed(program: Path | str, returncode: int, stderr: IO[bytes]) -> ToolError:
    stderr.seek(0)
    tail = stderr.read().decode(errors="replace").strip().splitlines()[-3:]
    return ToolError(f"{Path(str(program)).name} exited {returncode}: {' / '.join(tail)}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_READ):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(*paths: Path | None) -> None:
    for path in paths:
        if path is not None:
            with suppress(FileNotFoundError):
                path.unlink()


def _slot_utc(slot: datetime) -> datetime:
    if slot.tzinfo is None:
        raise ValueError(f"slot {slot.isoformat()} has no time zone")
    return slot.astimezone(UTC)


def backup_path(directory: Path, kind: str, slot: datetime, encrypted: bool) -> Path:
    """Where the backup of (kind, slot) lives: <dir>/<kind>/<kind>-20261127T140000Z.dump[.enc]."""
    name = f"{kind}-{_slot_utc(slot):%Y%m%dT%H%M%SZ}.dump"
    return directory / kind / (name + (".enc" if encrypted else ""))


# --- backup -------------------------------------------------------------------------------


@dataclass
class _Dumped:
    tables: dict[str, dict[str, Any]]
    missing_key_tables: list[str]
    snapshot_at: datetime
    pg_major: int


def _dump(conn: Conn, key_tables: list[str], target: Path) -> _Dumped:
    """pg_dump -Fc of `conn` into `target`, with row counts and checksums taken from the
    very snapshot the dump reads."""
    major = server_major(conn)
    pg_dump = find_tool("pg_dump", major)
    # This is the one transaction held across I/O on purpose, and it is on the *source*
    # database: a REPEATABLE READ transaction exports its snapshot, pg_dump imports it, and
    # the transaction must stay open until pg_dump is done so the counts and checksums
    # below describe exactly the rows in the dump.
    with conn.connect(autocommit=False) as source:
        source.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        source.read_only = True
        row = source.execute("SELECT pg_export_snapshot(), now()").fetchone()
        assert row is not None
        snapshot_id, snapshot_at = row
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(
                [
                    str(pg_dump),
                    "--format=custom",
                    f"--snapshot={snapshot_id}",
                    f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT_MS}",
                    "--no-password",
                    f"--file={target}",
                ],
                env=conn.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            try:
                # Counted while pg_dump runs: both read the same snapshot.
                tables, missing = snapshot_tables(source, key_tables)
                returncode = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if returncode != 0:
                raise _tool_failed(pg_dump, returncode, stderr)
        source.rollback()
    return _Dumped(tables, missing, snapshot_at, major)


def run_logical_backup(
    sessions: SessionFactory,
    conn: Conn,
    config: BackupsConfig,
    directory: Path,
    kind: str,
    slot: datetime,
    passphrase: str | None,
    now: Callable[[], datetime] = utcnow,
) -> dict[str, Any]:
    """Back up the database `conn` names for (kind, slot), at most once: a duplicate tick,
    a second beat or a redelivered task finds the row and returns {"skipped": ...}. A failed
    dump is recorded (state failed, error) and returned as {"failed": ...}."""
    slot = _slot_utc(slot)
    with sessions() as session:
        claim = job.claim(session, Backup, kind, slot, now(), lease=LEASE, retake_failed=True)
    if claim.skipped:
        return {"skipped": claim.skipped, "backup_id": claim.row_id, "state": claim.state}

    encrypt = bool(config.encrypt)
    final = backup_path(directory, kind, slot, encrypt)
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Partial files of this slot left by a worker that died: we hold the lease now.
    for leftover in final.parent.glob(f".{final.name.removesuffix('.enc')}*.partial"):
        _unlink(leftover)
    stem = f".{final.name}.{claim.token[:8]}"
    plain, sealed = final.parent / f"{stem}.partial", final.parent / f"{stem}.enc.partial"
    started = time.monotonic()
    try:
        if encrypt and not passphrase:
            raise BackupError(f"backups.encrypt is on but {NO_KEY}")
        with job.Lease(sessions, claim, now, every=HEARTBEAT_EVERY_S) as lease:
            # pg_dump creates the file itself; pre-create it 0600 so the dump is never
            # readable by others, not even for a moment.
            os.close(os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            dumped = _dump(conn, config.key_tables, plain)
            if encrypt:
                assert passphrase is not None
                # The plaintext exists on local disk (mode 0600) only while it is encrypted.
                encrypt_file(plain, sealed, passphrase)
                _unlink(plain)
                result_file = sealed
            else:
                _fsync(plain)
                result_file = plain
            digest = sha256_file(result_file)
            size = result_file.stat().st_size
        if lease.lost:
            _unlink(plain, sealed)
            return {"skipped": "lease lost to another worker", "backup_id": claim.row_id}
        duration = time.monotonic() - started
        with sessions() as session:
            # The rename happens under the row lock, after checking we still own the row,
            # so a worker that lost its lease never replaces the new owner's file.
            if not _finish_rename(session, claim, result_file, final):
                _unlink(plain, sealed)
                return {"skipped": "lease lost to another worker", "backup_id": claim.row_id}
            job.finish(
                session,
                claim,
                state="succeeded",
                finished_at=now(),
                snapshot_at=dumped.snapshot_at,
                path=str(final),
                size_bytes=size,
                sha256=digest,
                duration_s=round(duration, 3),
                encrypted=encrypt,
                tables=dumped.tables,
                details={
                    "format": FORMAT,
                    "pg_major": dumped.pg_major,
                    "database": conn.dbname,
                    "missing_key_tables": dumped.missing_key_tables,
                },
            )
    except Exception as exc:
        _unlink(plain, sealed)
        error = _error_text(exc, conn)
        log.warning("backup %s %s failed: %s", kind, slot.isoformat(), error)
        with sessions() as session:
            job.finish(
                session,
                claim,
                state="failed",
                finished_at=now(),
                duration_s=round(time.monotonic() - started, 3),
                error=error,
                details={"format": FORMAT, "database": conn.dbname},
            )
        return {"failed": error, "backup_id": claim.row_id}
    return {
        "backup_id": claim.row_id,
        "kind": kind,
        "slot": slot.isoformat(),
        "state": "succeeded",
        "size_bytes": size,
        "duration_s": round(duration, 3),
        "encrypted": encrypt,
        "tables": len(dumped.tables),
    }


def _finish_rename(session: Session, claim: job.Claim, source: Path, final: Path) -> bool:
    if not job.owns(session, claim):
        return False
    os.replace(source, final)
    _fsync(final.parent)
    return True


# --- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class _BackupFile:
    id: int
    path: Path
    sha256: str | None
    encrypted: bool
    pg_major: int | None
    snapshot_at: datetime | None
    tables: dict[str, dict[str, Any]]

    @classmethod
    def of(cls, row: Backup) -> _BackupFile:
        major = (row.details or {}).get("pg_major")
        return cls(
            row.id,
            Path(row.path or ""),
            row.sha256,
            row.encrypted,
            int(major) if major else None,
            row.snapshot_at,
            dict(row.tables or {}),
        )


def _pg_restore(major: int | None) -> Path:
    return find_tool("pg_restore", major)


def full_read(
    path: Path, encrypted: bool, passphrase: str | None, pg_major: int | None = None
) -> None:
    """Read every byte of the archive the way a restore would: `pg_restore -f /dev/null`
    decompresses every data block and checks the archive's structure to the end (which
    `pg_restore --list`, reading only the table of contents, does not). An encrypted file
    is decrypted on the fly into pg_restore's stdin: a custom-format archive reads fine
    from a pipe when, as here, the data comes in table-of-contents order.
    Raises CorruptBackup."""
    program = _pg_restore(pg_major)
    with tempfile.TemporaryFile() as stderr:
        if not encrypted:
            proc = subprocess.Popen(
                [str(program), "-f", os.devnull, str(path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            returncode = proc.wait()
        else:
            if not passphrase:
                raise BackupError(NO_KEY)
            proc = subprocess.Popen(
                [str(program), "-f", os.devnull],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            assert proc.stdin is not None
            try:
                try:
                    decrypt_stream(path, cast(BinaryIO, proc.stdin), passphrase)
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # pg_restore stopped reading: its exit status says why
                except BaseException:
                    proc.kill()
                    raise
            finally:
                with suppress(BrokenPipeError):
                    proc.stdin.close()
                returncode = proc.wait()
        if returncode != 0:
            raise CorruptBackup(str(_tool_failed(program, returncode, stderr)))


def verify_backup(
    sessions: SessionFactory,
    backup_id: int,
    passphrase: str | None,
    now: Callable[[], datetime] = utcnow,
) -> dict[str, Any]:
    """SHA-256 of the file against the row, then a full read of the archive. Sets
    verify_state to verified or corrupt (with verify_error)."""
    with sessions() as session:
        row = session.get(Backup, backup_id)
        if row is None:
            return {"skipped": f"no backup {backup_id}", "backup_id": backup_id}
        if (row.details or {}).get("format") != FORMAT:
            return {"skipped": "not a logical backup", "backup_id": backup_id}
        if row.state != "succeeded" or row.deleted_at is not None or not row.path:
            why = "deleted" if row.deleted_at is not None else f"state {row.state}"
            return {"skipped": why, "backup_id": backup_id}
        backup = _BackupFile.of(row)
    started = time.monotonic()
    error: str | None = None
    if backup.encrypted and not passphrase:
        # Not proof of damage: leave it unverified, say why, and try again next time.
        with sessions() as session:
            session.execute(
                update(Backup).where(Backup.id == backup_id).values(verify_error=NO_KEY)
            )
        return {"failed": NO_KEY, "backup_id": backup_id}
    try:
        if not backup.path.is_file():
            raise CorruptBackup(f"file missing: {backup.path}")
        actual = sha256_file(backup.path)
        if actual != backup.sha256:
            raise CorruptBackup(f"sha256 mismatch: recorded {backup.sha256}, file has {actual}")
        full_read(backup.path, backup.encrypted, passphrase, backup.pg_major)
    except (CorruptBackup, OSError) as exc:
        error = _error_text(exc)
    seconds = round(time.monotonic() - started, 3)
    state = "corrupt" if error else "verified"
    with sessions() as session:
        row = session.get(Backup, backup_id)
        if row is not None:
            row.verify_state, row.verify_error, row.verified_at = state, error, now()
            row.details = {**(row.details or {}), "verify_s": seconds}
    out: dict[str, Any] = {"backup_id": backup_id, "verify_state": state, "seconds": seconds}
    if error:
        out["error"] = error
    return out


def verify_due_backups(
    sessions: SessionFactory, passphrase: str | None, now: Callable[[], datetime] = utcnow
) -> dict[str, Any]:
    """Verify every succeeded, unverified, not deleted logical backup."""
    with sessions() as session:
        ids = list(
            session.execute(
                select(Backup.id)
                .where(
                    Backup.state == "succeeded",
                    Backup.verify_state == "unverified",
                    Backup.deleted_at.is_(None),
                    Backup.details["format"].astext == FORMAT,
                )
                .order_by(Backup.id)
            ).scalars()
        )
    counts = {"verified": 0, "corrupt": 0, "failed": 0, "skipped": 0}
    corrupt: list[int] = []
    for backup_id in ids:
        result = verify_backup(sessions, backup_id, passphrase, now)
        if "skipped" in result:
            counts["skipped"] += 1
        elif "failed" in result:
            counts["failed"] += 1
        else:
            counts[result["verify_state"]] += 1
            if result["verify_state"] == "corrupt":
                corrupt.append(backup_id)
    return {**counts, "corrupt_ids": corrupt}


# --- restore test ------------------------------------------------------------------------


def _drop_database(admin: Conn, name: str) -> None:
    with admin.connect() as db:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def _scratch_database(conn: Conn, name: str) -> Iterator[Conn]:
    """A fresh empty database on conn's server, always dropped afterwards."""
    with conn.connect() as db:
        db.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    try:
        yield conn.with_db(name)
    finally:
        _drop_database(conn, name)


def _pick_backup(session: Session, backup_id: int | None) -> Backup | None:
    if backup_id is not None:
        return session.get(Backup, backup_id)
    return session.execute(
        select(Backup)
        .where(
            Backup.kind.in_(LOGICAL_KINDS),
            Backup.state == "succeeded",
            Backup.verify_state == "verified",
            Backup.deleted_at.is_(None),
        )
        .order_by(Backup.snapshot_at.desc().nulls_last(), Backup.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def restore_test(
    sessions: SessionFactory,
    conn: Conn,
    backup_id: int | None,
    slot: datetime,
    passphrase: str | None,
    now: Callable[[], datetime] = utcnow,
    *,
    config: BackupsConfig | None = None,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Restore a backup (the given one, else the newest verified logical one) into a scratch
    database on conn's server, compare row counts and checksums with what the backup
    recorded, record RTO and RPO, and drop the scratch database whatever happens.
    At most one run per slot; a finished run (passed or failed) is never run again."""
    slot = _slot_utc(slot)
    with sessions() as session:
        # No retake_failed: a failed restore test stays failed (it is the finding).
        claim = job.claim(session, RestoreRun, RESTORE_TEST, slot, now(), lease=LEASE)
    if claim.skipped:
        return {"skipped": claim.skipped, "run_id": claim.row_id, "state": claim.state}
    if claim.previous_target and claim.previous_target.startswith("eventops_restore_"):
        # The dead worker's scratch database would otherwise linger.
        with suppress(Exception):
            _drop_database(conn, claim.previous_target)

    details: dict[str, Any] = {}
    backup: _BackupFile | None = None
    rto_s: float | None = None
    rpo_s: float | None = None
    error: str | None = None
    scratch = f"eventops_restore_{secrets.token_hex(6)}"
    decrypted: Path | None = None
    started = time.monotonic()
    try:
        with job.Lease(sessions, claim, now, every=HEARTBEAT_EVERY_S):
            with sessions() as session:
                row = _pick_backup(session, backup_id)
                if row is None:
                    raise BackupError(
                        f"no backup {backup_id}"
                        if backup_id is not None
                        else "no verified logical backup to restore"
                    )
                if row.state != "succeeded" or not row.path or row.deleted_at is not None:
                    raise BackupError(f"backup {row.id} is not restorable (state {row.state})")
                backup = _BackupFile.of(row)
                session.execute(
                    update(RestoreRun)
                    .where(RestoreRun.id == claim.row_id)
                    .values(backup_id=backup.id, target=scratch)
                )
            if backup.snapshot_at is not None:
                rpo_s = round((now() - backup.snapshot_at).total_seconds(), 3)
            started = time.monotonic()
            archive = backup.path
            if sha256_file(archive) != backup.sha256:
                raise CorruptBackup(f"sha256 of {archive.name} does not match the backup row")
            if backup.encrypted:
                if not passphrase:
                    raise BackupError(NO_KEY)
                decrypted = decrypt_to_file(archive, archive.parent, passphrase)
                archive = decrypted
            major = max(server_major(conn), backup.pg_major or 0)
            pg_restore = _pg_restore(major)
            workers = jobs or min(4, os.cpu_count() or 1)
            with _scratch_database(conn, scratch) as target:
                with tempfile.TemporaryFile() as stderr:
                    proc = subprocess.run(
                        [
                            str(pg_restore),
                            "--no-owner",
                            "--no-privileges",
                            "--exit-on-error",
                            "--no-password",
                            f"--jobs={workers}",
                            "--dbname",
                            scratch,
                            str(archive),
                        ],
                        env=target.env(),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                        check=False,
                    )
                    if proc.returncode != 0:
                        raise _tool_failed(pg_restore, proc.returncode, stderr)
                with target.connect() as restored:
                    tables = compare_tables(restored, backup.tables)
            rto_s = round(time.monotonic() - started, 3)
            mismatches = [name for name, t in tables.items() if not t["ok"]]
            details.update(tables=tables, mismatches=mismatches, jobs=workers)
            if mismatches:
                error = f"{len(mismatches)} table(s) differ from the backup: " + ", ".join(
                    mismatches[:10]
                )
    except Exception as exc:
        error = _error_text(exc, conn)
        log.warning("restore test %s failed: %s", slot.isoformat(), error)
    finally:
        _unlink(decrypted)
    if config is not None:
        details["objectives"] = {
            "rto_s": config.rto.total_seconds(),
            "rpo_s": config.rpo.total_seconds(),
            "rto_met": rto_s is not None and rto_s <= config.rto.total_seconds(),
            "rpo_met": rpo_s is not None and rpo_s <= config.rpo.total_seconds(),
        }
    state = "failed" if error else "passed"
    with sessions() as session:
        job.finish(
            session,
            claim,
            state=state,
            finished_at=now(),
            rto_s=rto_s,
            rpo_s=rpo_s,
            error=error,
            details=details,
        )
    out: dict[str, Any] = {
        "run_id": claim.row_id,
        "backup_id": backup.id if backup else None,
        "state": state,
        "rto_s": rto_s,
        "rpo_s": rpo_s,
        "mismatches": details.get("mismatches", []),
    }
    if error:
        out["error"] = error
    return out
