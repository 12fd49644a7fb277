"""File storage and configuration backups: an incremental, content-addressed store of an
upload directory with a SHA-256 manifest per run, and redacted copies of the config files.

Layout under the store directory:

    files/<name>/objects/<sha[:2]>/<sha>     one object per distinct content, named by the
                                            SHA-256 of the plaintext (encrypted at rest when
                                            a passphrase is given), so unchanged or renamed
                                            files are never copied twice
    files/<name>/manifests/<slot>.json      every file of one run: path, size, mtime, sha256
    config/<slot>/<file>, index.json        the config files of one run, secrets redacted
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

import yaml
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.backups import jobs as job
from core.clock import utcnow
from models.tables import Backup

log = logging.getLogger(__name__)

SessionFactory = Callable[[], AbstractContextManager[Session]]

MANIFEST_FORMAT = "eventops-files/1"
CONFIG_FORMAT = "eventops-config/1"
REDACTED = "***REDACTED***"
CHUNK = 1 << 20
# A running row whose heartbeat is older than this belongs to a dead worker: taken over.
LEASE = timedelta(minutes=30)
HEARTBEAT_EVERY_S = 60.0
# Errors and skips listed in the row (the manifest has them all): rows stay small.
MAX_LISTED = 50
# A file modified this close to the scan may change again within the filesystem's mtime
# granularity without its (size, mtime) changing ("racy git"): hashed again next run.
RACY_NS = 2_000_000_000
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class FilesRestoreError(RuntimeError):
    """A restore found missing or corrupt objects; `result` says which (the rest restored)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


# ---------------------------------------------------------------------------------------
# small helpers


def slot_stem(slot: datetime) -> str:
    """A slot as a file name that sorts by time: 20261127T130000Z."""
    if slot.tzinfo is None:
        raise ValueError("slot must be timezone-aware")
    return slot.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write a whole file or nothing: a temp file beside it, fsync, rename, fsync the dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)


class _HashWriter(io.RawIOBase):
    """A write-only stream that hashes what it is given and, optionally, passes it on."""

    def __init__(self, out: BinaryIO | None = None) -> None:
        self.hash = hashlib.sha256()
        self.size = 0
        self.out = out

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.size += len(view)
        if self.out is not None:
            self.out.write(view)
        return len(view)


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _plaintext_sha256(path: Path, passphrase: str | None) -> str:
    """SHA-256 of an object's plaintext, decrypting it when it is encrypted."""
    from core.backups.crypto import decrypt_stream, is_encrypted

    if not is_encrypted(path):
        return _sha256_file(path)[0]
    if passphrase is None:
        raise ValueError(f"{path.name} is encrypted and no passphrase was given")
    sink = _HashWriter()
    decrypt_stream(path, cast(BinaryIO, sink), passphrase)
    return sink.hash.hexdigest()


@contextmanager
def _store_lock(root: Path, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """Backups of a name share the lock; pruning its objects takes it alone, so an object a
    running backup has stored but not yet listed in a manifest is never pruned."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+b") as handle:
        flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(handle.fileno(), flags | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------
# the backups row: claimed by (kind, slot), finished by a conditional update


def _claim(
    sessions: SessionFactory, kind: str, slot: datetime, at: datetime, details: dict[str, Any]
) -> job.Claim:
    """Insert the slot's row, or take over a failed one or one whose worker died. Fenced by
    a claim token, so a worker that lost its row to a take-over cannot write over it."""
    with sessions() as session:
        return job.claim(
            session,
            Backup,
            kind,
            slot,
            at,
            lease=LEASE,
            retake_failed=True,
            fence=True,
            details=details,
        )


def _fail(
    sessions: SessionFactory, claim: job.Claim, exc: Exception, at: datetime, started: float
) -> str:
    if isinstance(exc, SQLAlchemyError):
        raise exc
    error = _describe(exc)
    log.warning("backup row %s failed: %s", claim.row_id, error)
    job.finish_with(
        sessions,
        claim,
        state="failed",
        error=error,
        finished_at=at,
        duration_s=time.monotonic() - started,
    )
    return error


# ---------------------------------------------------------------------------------------
# file storage backups


@dataclass
class _Scan:
    files: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    hashed: int = 0
    reused: int = 0
    new_objects: int = 0
    bytes_copied: int = 0
    bytes_stored: int = 0
    reencrypted: int = 0


def _walk(source: Path, scan: _Scan) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files under source, sorted, as (posix relative path, lstat). Symlinks are
    never followed and other special files (FIFOs would block a read) are skipped."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(source / rel_dir if rel_dir else source) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            if not rel_dir:
                raise
            scan.errors.append({"path": rel_dir, "error": _describe(exc)})
            continue
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_symlink():
                    scan.skipped.append({"path": rel, "reason": "symlink (not followed)"})
                elif entry.is_dir(follow_symlinks=False):
                    subdirs.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    yield rel, entry.stat(follow_symlinks=False)
                else:
                    scan.skipped.append({"path": rel, "reason": "not a regular file"})
            except OSError as exc:
                scan.errors.append({"path": rel, "error": _describe(exc)})
        stack.extend(reversed(subdirs))


def _previous_entries(
    sessions: SessionFactory, kind: str, slot: datetime
) -> tuple[dict[str, dict[str, Any]], bool]:
    """The newest earlier successful run's manifest, trusted only if its SHA-256 still
    matches the row: {path: entry} and whether its objects were all encrypted."""
    with sessions() as session:
        row = session.execute(
            select(Backup.path, Backup.sha256)
            .where(
                Backup.kind == kind,
                Backup.state == "succeeded",
                Backup.deleted_at.is_(None),
                Backup.slot < slot,
            )
            .order_by(Backup.slot.desc())
            .limit(1)
        ).first()
    if row is None or not row.path:
        return {}, False
    try:
        raw = Path(row.path).read_bytes()
        if hashlib.sha256(raw).hexdigest() != row.sha256:
            log.warning("manifest %s does not match its recorded SHA-256; full scan", row.path)
            return {}, False
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        log.warning("previous manifest unusable (%s); full scan", _describe(exc))
        return {}, False
    return {e["path"]: e for e in data.get("files", [])}, bool(data.get("encrypted"))


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
    )


def _store_object(
    src: Path,
    sha: str,
    objects: Path,
    passphrase: str | None,
    seen: os.stat_result | None = None,
    settled_before_ns: int = 0,
) -> int:
    """Copy (or encrypt) src into the store under its plaintext SHA-256, making sure what
    was stored really has that hash: a file rewritten between hashing and copying raises
    _Changed instead of leaving a wrongly named object. Returns bytes on disk.

    A plain copy is hashed as it is written. An encrypted one is decrypted again to check,
    unless the file provably did not change: same inode, size, mtime and ctime as when it
    was first seen, with a ctime older than `settled_before_ns` (every write moves ctime to
    the present, which a file settled before the scan began cannot already have). That
    spares a second scrypt and full read for almost every file."""
    dst = objects / sha[:2] / sha
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=dst.parent)
    tmp = Path(tmp_name)
    try:
        if passphrase is None:
            with open(src, "rb") as source, os.fdopen(fd, "wb") as out:
                sink = _HashWriter(cast(BinaryIO, out))
                while chunk := source.read(CHUNK):
                    sink.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            got = sink.hash.hexdigest()
        else:
            from core.backups.crypto import encrypt_file

            os.close(fd)
            encrypt_file(src, tmp, passphrase)
            _fsync_file(tmp)
            after = os.stat(src)
            if seen is not None and not _same_file(seen, after):
                raise _Changed(f"content changed while being backed up (expected {sha[:12]})")
            if seen is not None and seen.st_ctime_ns < settled_before_ns:
                got = sha
            else:
                # Read back through decryption: the object decrypts to the named content.
                got = _plaintext_sha256(tmp, passphrase)
        if got != sha:
            raise _Changed(f"content changed while being backed up (expected {sha[:12]})")
        size = tmp.stat().st_size
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)
        return size
    finally:
        if tmp.exists():
            tmp.unlink()


class _Changed(OSError):
    pass


def backup_files(
    sessions: SessionFactory,
    name: str,
    source: Path,
    store: Path,
    slot: datetime,
    passphrase: str | None,
    now: Callable[[], datetime] = utcnow,
) -> dict[str, Any]:
    """One incremental backup of a directory of uploads for this slot (row kind
    `files:<name>`, so a duplicate tick finds the row and does nothing).

    A file whose size and mtime match the previous run's manifest keeps its hash without
    being read; others are hashed and copied only if no object has that content yet.
    Unreadable files are listed as errors and symlinks as skipped; the run still succeeds.
    """
    if not _NAME.match(name):
        raise ValueError(f"backup name {name!r} must be a plain file name")
    kind = f"files:{name}"
    stem = slot_stem(slot)
    root = store / "files" / name
    objects = root / "objects"
    manifest_path = root / "manifests" / f"{stem}.json"
    started_at = now()
    started = time.monotonic()
    claim = _claim(sessions, kind, slot, started_at, {"name": name, "source": str(source)})
    if not claim.owned:
        return {"name": name, "slot": slot.isoformat(), "skipped": f"slot already {claim.state}"}
    try:
        with _store_lock(root, exclusive=False):
            scan, encrypted = _scan_and_store(
                sessions, claim, kind, slot, source, objects, passphrase, now
            )
            manifest = {
                "format": MANIFEST_FORMAT,
                "name": name,
                "slot": slot.isoformat(),
                "created_at": started_at.isoformat(),
                "source": str(source),
                "encrypted": encrypted,
                "files": scan.files,
                "skipped": scan.skipped,
                "errors": scan.errors,
            }
            raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
            write_atomic(manifest_path, raw)
    except Exception as exc:
        error = _fail(sessions, claim, exc, now(), started)
        return {"name": name, "slot": slot.isoformat(), "state": "failed", "error": error}
    manifest_sha = hashlib.sha256(raw).hexdigest()
    details = {
        "name": name,
        "source": str(source),
        "files": len(scan.files),
        "hashed": scan.hashed,
        "reused_hashes": scan.reused,
        "new_objects": scan.new_objects,
        "bytes_copied": scan.bytes_copied,
        "bytes_stored": scan.bytes_stored,
        "reencrypted": scan.reencrypted,
        "manifest": str(manifest_path),
        "manifest_sha256": manifest_sha,
        "skipped_count": len(scan.skipped),
        "skipped": scan.skipped[:MAX_LISTED],
        "error_count": len(scan.errors),
        "errors": scan.errors[:MAX_LISTED],
    }
    total = sum(e["size"] for e in scan.files)
    duration = time.monotonic() - started
    job.finish_with(
        sessions,
        claim,
        state="succeeded",
        finished_at=now(),
        snapshot_at=started_at,
        path=str(manifest_path),
        size_bytes=total,
        sha256=manifest_sha,
        duration_s=duration,
        encrypted=encrypted,
        details=details,
    )
    summary = {k: v for k, v in details.items() if k not in ("skipped", "errors", "source")}
    return {"slot": slot.isoformat(), "state": "succeeded", "backup_id": claim.row_id, **summary}


def _scan_and_store(
    sessions: SessionFactory,
    claim: job.Claim,
    kind: str,
    slot: datetime,
    source: Path,
    objects: Path,
    passphrase: str | None,
    now: Callable[[], datetime],
) -> tuple[_Scan, bool]:
    if not source.is_dir():
        raise FileNotFoundError(f"source directory {source} does not exist")
    previous, previous_encrypted = _previous_entries(sessions, kind, slot)
    scan = _Scan()
    scan_start_ns = time.time_ns()
    last_beat = time.monotonic()
    # Objects known to exist in the wanted form this run (encrypted if a passphrase is set).
    known: set[str] = set()
    all_encrypted = passphrase is not None
    for rel, st in _walk(source, scan):
        # Beats come from the scan itself, not a `job.Lease` thread: a scan stuck on one
        # file (a hung mount) stops beating, and its row is taken over after LEASE.
        if time.monotonic() - last_beat > HEARTBEAT_EVERY_S:
            job.beat(sessions, claim, now())
            last_beat = time.monotonic()
        path = source / rel
        prior = previous.get(rel)
        try:
            if (
                prior is not None
                and prior["size"] == st.st_size
                and prior["mtime_ns"] == st.st_mtime_ns
                and not prior.get("racy")
            ):
                sha = prior["sha256"]
                scan.reused += 1
            else:
                sha, _ = _sha256_file(path)
                scan.hashed += 1
            if sha not in known:
                trusted = prior is not None and prior["sha256"] == sha and previous_encrypted
                _ensure_object(
                    path, sha, st, objects, passphrase, trusted, scan, scan_start_ns - RACY_NS
                )
                known.add(sha)
        except OSError as exc:
            scan.errors.append({"path": rel, "error": _describe(exc)})
            continue
        entry: dict[str, Any] = {
            "path": rel,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": sha,
        }
        if st.st_mtime_ns >= scan_start_ns - RACY_NS:
            entry["racy"] = True
        scan.files.append(entry)
    return scan, all_encrypted


def _ensure_object(
    path: Path,
    sha: str,
    st: os.stat_result,
    objects: Path,
    passphrase: str | None,
    trusted_encrypted: bool,
    scan: _Scan,
    settled_before_ns: int,
) -> None:
    obj = objects / sha[:2] / sha
    if obj.is_file():
        if passphrase is None or trusted_encrypted:
            return
        from core.backups.crypto import is_encrypted

        if is_encrypted(obj):
            return
        # Stored in plaintext by a run without a key: encrypt it now, from the object itself
        # when it is intact, so encryption at rest covers the whole store.
        try:
            obj_st = obj.stat()
            if _sha256_file(obj)[0] == sha:
                _store_object(obj, sha, objects, passphrase, obj_st, settled_before_ns)
                scan.reencrypted += 1
                return
        except _Changed:
            pass
        log.warning("object %s was corrupt; stored again from %s", sha[:12], path)
    # A file rewritten while we read it raises _Changed: an error for this run, and the
    # next run sees its new size or mtime and takes it then.
    stored = _store_object(path, sha, objects, passphrase, st, settled_before_ns)
    scan.new_objects += 1
    scan.bytes_copied += st.st_size
    scan.bytes_stored += stored


def _safe_relative(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or not path.parts or any(p in ("..", ".", "") for p in path.parts):
        raise ValueError(f"unsafe path in manifest: {rel!r}")
    return path


def restore_files(
    manifest: Path,
    store: Path,
    target: Path,
    passphrase: str | None,
    *,
    strict: bool = True,
) -> dict[str, Any]:
    """Recreate the tree a manifest lists into an empty (or new) target directory,
    checking each object's SHA-256 as it is written. A missing or corrupt object is not
    written; the rest is restored, and with `strict` a FilesRestoreError names them."""
    data = json.loads(manifest.read_bytes())
    if data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{manifest} is not a files manifest")
    if target.exists():
        if not target.is_dir():
            raise FileExistsError(f"{target} exists and is not a directory")
        if any(target.iterdir()):
            raise FileExistsError(f"{target} is not empty; restore into an empty directory")
    target.mkdir(parents=True, exist_ok=True)
    objects = store / "files" / data["name"] / "objects"
    restored = 0
    restored_bytes = 0
    missing: list[str] = []
    corrupt: list[dict[str, str]] = []
    for entry in data["files"]:
        rel = _safe_relative(entry["path"])
        sha = entry["sha256"]
        if not _HEX64.match(sha):
            corrupt.append({"path": str(rel), "error": "bad hash in manifest"})
            continue
        obj = objects / sha[:2] / sha
        if not obj.is_file():
            missing.append(str(rel))
            continue
        dst = target.joinpath(*rel.parts)
        dst.parent.mkdir(parents=True, exist_ok=True)
        partial = dst.with_name(f".{dst.name}.partial")
        try:
            _restore_object(obj, partial, passphrase, sha)
        except Exception as exc:
            partial.unlink(missing_ok=True)
            corrupt.append({"path": str(rel), "error": _describe(exc)})
            continue
        os.replace(partial, dst)
        os.utime(dst, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        restored += 1
        restored_bytes += entry["size"]
    result: dict[str, Any] = {
        "manifest": str(manifest),
        "target": str(target),
        "files": len(data["files"]),
        "restored": restored,
        "bytes": restored_bytes,
        "missing": missing,
        "corrupt": corrupt,
        "ok": not missing and not corrupt,
    }
    if strict and not result["ok"]:
        raise FilesRestoreError(
            f"{len(missing)} missing and {len(corrupt)} corrupt objects "
            f"(first: {(missing or [c['path'] for c in corrupt])[0]})",
            result,
        )
    return result


def _restore_object(obj: Path, dst: Path, passphrase: str | None, sha: str) -> None:
    from core.backups.crypto import decrypt_stream, is_encrypted

    with open(dst, "wb") as out:
        sink = _HashWriter(cast(BinaryIO, out))
        if is_encrypted(obj):
            if passphrase is None:
                raise ValueError("object is encrypted and no passphrase was given")
            decrypt_stream(obj, cast(BinaryIO, sink), passphrase)
        else:
            with open(obj, "rb") as src:
                while chunk := src.read(CHUNK):
                    sink.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if sink.hash.hexdigest() != sha:
        raise ValueError(f"SHA-256 mismatch: object {sha[:12]} was altered on disk")


def prune_file_objects(
    store: Path, name: str, grace: timedelta = timedelta(hours=1)
) -> dict[str, Any]:
    """Remove the objects of a file backup that no remaining manifest references (after
    retention deleted old manifests). Refuses to prune if any manifest is unreadable, and
    leaves objects younger than `grace` (a backup on another host may be writing them)."""
    if not _NAME.match(name):
        raise ValueError(f"backup name {name!r} must be a plain file name")
    root = store / "files" / name
    objects = root / "objects"
    if not objects.is_dir():
        return {"name": name, "objects": 0, "removed": 0, "bytes_freed": 0}
    with _store_lock(root, exclusive=True, wait=False) as locked:
        if not locked:
            return {"name": name, "skipped": "a backup of this store is running"}
        referenced: set[str] = set()
        for manifest in sorted((root / "manifests").glob("*.json")):
            try:
                data = json.loads(manifest.read_bytes())
                referenced.update(e["sha256"] for e in data["files"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                return {"name": name, "skipped": f"{manifest.name} unreadable: {_describe(exc)}"}
        cutoff = time.time() - grace.total_seconds()
        count = removed = freed = 0
        for bucket in objects.iterdir():
            if not bucket.is_dir():
                continue
            for obj in bucket.iterdir():
                st = obj.lstat()
                if _HEX64.match(obj.name):
                    count += 1
                    if obj.name in referenced:
                        continue
                elif not obj.name.startswith(".tmp-"):
                    continue  # not ours
                if st.st_mtime > cutoff:
                    continue
                obj.unlink()
                removed += 1
                freed += st.st_size
    return {"name": name, "objects": count, "removed": removed, "bytes_freed": freed}


# ---------------------------------------------------------------------------------------
# configuration backups, secrets redacted

# A key is secret when its last word is one of these (api_key, webhook_url, DATABASE_URL)
# or any word is a strong one (client_secret_file): key_tables or url_count are not.
_SECRET_LAST = {
    "url",
    "urls",
    "uri",
    "dsn",
    "key",
    "keys",
    "apikey",
    "auth",
    "authorization",
    "cookie",
    "webhook",
    "pass",
    "pwd",
}
_SECRET_ANY = {
    "password",
    "passwords",
    "passwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "tokens",
    "credential",
    "credentials",
    "dsn",
    "apikey",
    "private",
}
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
# Credentials in a URL (scheme://user:pass@ or scheme://token@), secrets in a query string,
# and well-known key formats (Stripe, Slack, GitHub, AWS, JWTs, PEM private keys).
_CRED_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@?#'\"]+@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&;][^=&\s#'\"]*(?:token|key|secret|pass|pwd|sig|signature|auth|credential)"
    r"[^=&\s#'\"]*=)[^&\s#'\"]+",
    re.IGNORECASE,
)
_KNOWN_SECRET = re.compile(
    r"\b(?:[sr]k_(?:live|test)_[A-Za-z0-9]{8,}|whsec_[A-Za-z0-9]{8,}|xox[abprs]-[A-Za-z0-9-]{8,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)
_LINE = re.compile(
    r"^(?P<lead>\s*(?:export\s+)?[\"']?)(?P<key>[A-Za-z_][\w.\-]*)"
    r"(?P<sep>[\"']?\s*[=:]\s*)(?P<value>.*?)(?P<trail>\s*)$"
)


def is_secret_key(key: object) -> bool:
    words = [w.lower() for w in _WORDS.findall(str(key))]
    if not words:
        return False
    return words[-1] in _SECRET_LAST or any(w in _SECRET_ANY for w in words)


def _has_secret_value(text: str) -> bool:
    return bool(_CRED_URL.search(text) or _QUERY_SECRET.search(text) or _KNOWN_SECRET.search(text))


def _redact_tree(node: Any, secret: bool, counter: list[int]) -> Any:
    """A copy of a parsed YAML/JSON tree with secret values replaced: every scalar under
    a secret-named key, and any string that carries credentials wherever it is."""
    if isinstance(node, dict):
        out = {}
        for index, (key, value) in enumerate(node.items()):
            new_key = key
            if isinstance(key, str) and _has_secret_value(key):
                new_key = f"{REDACTED}{index}"
                counter[0] += 1
            out[new_key] = _redact_tree(value, secret or is_secret_key(key), counter)
        return out
    if isinstance(node, list):
        return [_redact_tree(item, secret, counter) for item in node]
    if node is None or isinstance(node, bool):
        return node
    if secret or (isinstance(node, str) and _has_secret_value(node)):
        counter[0] += 1
        return REDACTED
    # Dates, bytes and other YAML types: kept only if their text carries no secret.
    if not isinstance(node, (str, int, float)) and _has_secret_value(str(node)):
        counter[0] += 1
        return REDACTED
    return node


def _redact_value_text(text: str, counter: list[int]) -> str:
    def sub(pattern: re.Pattern[str], repl: Callable[[re.Match[str]], str], s: str) -> str:
        new, n = pattern.subn(repl, s)
        counter[0] += n
        return new

    text = sub(_CRED_URL, lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = sub(_QUERY_SECRET, lambda m: f"{m['name']}{REDACTED}", text)
    return sub(_KNOWN_SECRET, lambda m: REDACTED, text)


def redact_lines(text: str) -> tuple[str, int]:
    """Redact `KEY=value` / `key: value` lines whose key is secret, and credentials in URLs,
    query strings and known key formats on any line. Returns (text, redactions)."""
    counter = [0]
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        ending = line[len(body) :]
        match = _LINE.match(body)
        if match and match["value"] and is_secret_key(match["key"]):
            value = match["value"]
            quoted = re.match(r"([\"'])(.*?)\1(.*)$", value)
            value = f"{quoted[1]}{REDACTED}{quoted[1]}{quoted[3]}" if quoted else REDACTED
            body = f"{match['lead']}{match['key']}{match['sep']}{value}{match['trail']}"
            counter[0] += 1
        else:
            body = _redact_value_text(body, counter)
        out.append(body + ending)
    return "".join(out), counter[0]


def redact_config_text(filename: str, text: str) -> tuple[str, str, int]:
    """Redact one config file's text: YAML and JSON are parsed and every secret value
    replaced; anything else (or YAML that does not parse) line by line.
    Returns (text, the method used, redactions)."""
    suffix = Path(filename).suffix.lower()
    counter = [0]
    if suffix in (".yaml", ".yml"):
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError:
            pass
        else:
            redacted = [_redact_tree(doc, False, counter) for doc in docs]
            dumped = yaml.safe_dump_all(
                redacted, sort_keys=False, allow_unicode=True, default_flow_style=False
            )
            return dumped, "yaml", counter[0]
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            pass
        else:
            return json.dumps(_redact_tree(data, False, counter), indent=2), "json", counter[0]
    redacted_text, count = redact_lines(text)
    return redacted_text, "lines", count


def backup_config_files(
    sessions: SessionFactory,
    paths: list[Path],
    store: Path,
    slot: datetime,
    passphrase: str | None,
    now: Callable[[], datetime] = utcnow,
) -> dict[str, Any]:
    """Copy the configuration files into `config/<slot>/`, secrets redacted (and the copy
    encrypted when a passphrase is given), with an index.json of what was stored."""
    stem = slot_stem(slot)
    out_dir = store / "config" / stem
    started_at = now()
    started = time.monotonic()
    claim = _claim(sessions, "config", slot, started_at, {"paths": [str(p) for p in paths]})
    if not claim.owned:
        return {"slot": slot.isoformat(), "skipped": f"slot already {claim.state}"}
    entries: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        used: set[str] = set()
        for path in paths:
            try:
                raw = path.read_bytes()
            except OSError as exc:
                errors.append({"path": str(path), "error": _describe(exc)})
                continue
            text, method, count = redact_config_text(
                path.name, raw.decode("utf-8", errors="surrogateescape")
            )
            data = text.encode("utf-8", errors="surrogateescape")
            stored_name = path.name
            n = 1
            while stored_name in used or stored_name == "index.json":
                n += 1
                stored_name = f"{n}-{path.name}"
            used.add(stored_name)
            dst = out_dir / stored_name
            _write_config_copy(dst, data, passphrase)
            entries.append(
                {
                    "source": str(path),
                    "stored": stored_name,
                    "method": method,
                    "redactions": count,
                    "size": dst.stat().st_size,
                    "sha256": _sha256_file(dst)[0],
                    "plaintext_sha256": hashlib.sha256(data).hexdigest(),
                    "encrypted": passphrase is not None,
                }
            )
        index = {
            "format": CONFIG_FORMAT,
            "slot": slot.isoformat(),
            "created_at": started_at.isoformat(),
            "files": entries,
            "errors": errors,
        }
        raw_index = json.dumps(index, indent=1).encode()
        write_atomic(out_dir / "index.json", raw_index)
        if paths and not entries:
            raise OSError(f"none of the {len(paths)} config files could be read")
    except Exception as exc:
        error = _fail(sessions, claim, exc, now(), started)
        return {"slot": slot.isoformat(), "state": "failed", "error": error}
    details = {
        "files": len(entries),
        "stored": [e["stored"] for e in entries],
        "redactions": sum(e["redactions"] for e in entries),
        "index": str(out_dir / "index.json"),
        "error_count": len(errors),
        "errors": errors[:MAX_LISTED],
    }
    job.finish_with(
        sessions,
        claim,
        state="succeeded",
        finished_at=now(),
        snapshot_at=started_at,
        path=str(out_dir),
        size_bytes=sum(e["size"] for e in entries),
        sha256=hashlib.sha256(raw_index).hexdigest(),
        duration_s=time.monotonic() - started,
        encrypted=passphrase is not None,
        details=details,
    )
    return {
        "slot": slot.isoformat(),
        "state": "succeeded",
        "backup_id": claim.row_id,
        "files": len(entries),
        "redactions": details["redactions"],
        "error_count": len(errors),
    }


def _write_config_copy(dst: Path, data: bytes, passphrase: str | None) -> None:
    if passphrase is None:
        write_atomic(dst, data)
        return
    from core.backups.crypto import encrypt_file

    # The plaintext input of encrypt_file is already redacted; it lives only until renamed.
    fd, plain = tempfile.mkstemp(prefix=".tmp-plain-", dir=dst.parent)
    fd2, sealed = tempfile.mkstemp(prefix=".tmp-", dir=dst.parent)
    os.close(fd2)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        encrypt_file(Path(plain), Path(sealed), passphrase)
        _fsync_file(Path(sealed))
        os.replace(sealed, dst)
        _fsync_dir(dst.parent)
    finally:
        for leftover in (plain, sealed):
            if os.path.exists(leftover):
                os.unlink(leftover)
