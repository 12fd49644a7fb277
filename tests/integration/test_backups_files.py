"""File storage and config backups, and retention, against real Postgres and real files."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from core.backups import files as files_mod
from core.backups.crypto import decrypt_stream, is_encrypted
from core.backups.files import (
    FilesRestoreError,
    backup_config_files,
    backup_files,
    prune_file_objects,
    restore_files,
)
from core.backups.retention import apply_retention
from models.config import RetentionConfig
from models.db import session_scope
from models.tables import Backup, RestoreRun

T0 = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
OLD = time.time() - 86_400  # mtimes well before any scan: not "racy"


def clock(at: datetime):
    return lambda: at


def write(path: Path, data: bytes, mtime: float = OLD) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def tree(root: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def objects(store: Path, name: str = "uploads") -> list[Path]:
    return sorted(p for p in (store / "files" / name / "objects").glob("*/*"))


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    src = tmp_path / "uploads"
    write(src / "a.txt", b"alpha file contents\n")
    write(src / "same-as-a.txt", b"alpha file contents\n")  # same content: one object
    write(src / "img" / "big.bin", os.urandom(3 * (1 << 20) + 17))  # several crypto chunks
    write(src / "img" / "deep" / "c.txt", b"charlie\n")
    write(src / "empty", b"")
    (src / "link-to-a").symlink_to(src / "a.txt")
    (src / "link-to-img").symlink_to(src / "img")
    os.mkfifo(src / "pipe")  # a read would block: must be skipped, not opened
    return src


def rows(kind: str) -> list[Backup]:
    with session_scope() as session:
        return list(session.scalars(select(Backup).where(Backup.kind == kind).order_by("slot")))


def test_incremental_backup_restore_and_idempotent_slot(
    clean_db: str, tmp_path: Path, uploads: Path
) -> None:
    store = tmp_path / "store"
    first = backup_files(session_scope, "uploads", uploads, store, T0, None, now=clock(T0))
    assert first["state"] == "succeeded"
    assert first["files"] == 5 and first["new_objects"] == 4 and first["hashed"] == 5
    assert first["bytes_copied"] == sum(len(b) for b in set(tree(uploads).values()))
    assert first["skipped_count"] == 3 and first["error_count"] == 0
    assert len(objects(store)) == 4
    snapshot1 = tree(uploads)

    write(uploads / "img" / "deep" / "c.txt", b"charlie, edited\n", OLD + 60)
    write(uploads / "new.txt", b"a new upload\n")
    t1 = T0 + timedelta(days=1)
    second = backup_files(session_scope, "uploads", uploads, store, t1, None, now=clock(t1))
    assert second["new_objects"] == 2, second
    assert second["hashed"] == 2 and second["reused_hashes"] == 4
    assert second["bytes_copied"] == len(b"charlie, edited\n") + len(b"a new upload\n")
    assert len(objects(store)) == 6

    # A duplicate tick or a redelivery for the same slot changes nothing.
    again = backup_files(session_scope, "uploads", uploads, store, t1, None, now=clock(t1))
    assert "skipped" in again
    stored = rows("files:uploads")
    assert [r.slot for r in stored] == [T0, t1]
    row = stored[1]
    assert row.state == "succeeded" and row.details["name"] == "uploads"
    manifest2 = Path(row.path or "")
    assert row.sha256 == files_mod.hashlib.sha256(manifest2.read_bytes()).hexdigest()
    assert row.details["new_objects"] == 2 and row.details["files"] == 6
    skipped = {s["path"] for s in row.details["skipped"]}
    assert skipped == {"link-to-a", "link-to-img", "pipe"}

    for manifest, expected in ((Path(stored[0].path or ""), snapshot1), (manifest2, None)):
        target = tmp_path / f"restore-{manifest.stem}"
        result = restore_files(manifest, store, target, None)
        assert result["ok"] and result["restored"] == len(expected or tree(uploads))
        assert tree(target) == (expected if expected is not None else tree(uploads))
    entry = json.loads(manifest2.read_bytes())["files"][0]
    restored = tmp_path / f"restore-{manifest2.stem}" / entry["path"]
    assert restored.stat().st_mtime_ns == entry["mtime_ns"]

    with pytest.raises(FileExistsError):
        restore_files(manifest2, store, tmp_path / f"restore-{manifest2.stem}", None)


def test_tampered_object_is_detected_on_restore(
    clean_db: str, tmp_path: Path, uploads: Path
) -> None:
    store = tmp_path / "store"
    backup_files(session_scope, "uploads", uploads, store, T0, None, now=clock(T0))
    manifest = Path(rows("files:uploads")[0].path or "")
    entries = {e["path"]: e["sha256"] for e in json.loads(manifest.read_bytes())["files"]}
    victim = store / "files/uploads/objects" / entries["img/big.bin"][:2] / entries["img/big.bin"]
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0x01
    victim.write_bytes(bytes(data))
    target = tmp_path / "restore"
    with pytest.raises(FilesRestoreError) as caught:
        restore_files(manifest, store, target, None)
    result = caught.value.result
    assert [c["path"] for c in result["corrupt"]] == ["img/big.bin"]
    assert "mismatch" in result["corrupt"][0]["error"]
    # Everything else is restored; the corrupt file is not left behind half-written.
    assert set(tree(target)) == set(entries) - {"img/big.bin"}


def test_encrypted_store(clean_db: str, tmp_path: Path, uploads: Path) -> None:
    store = tmp_path / "store"
    # A first run without a key, then with one: the plaintext objects are sealed too.
    backup_files(session_scope, "uploads", uploads, store, T0, None, now=clock(T0))
    t1 = T0 + timedelta(days=1)
    result = backup_files(session_scope, "uploads", uploads, store, t1, "pass-phrase", clock(t1))
    assert result["reencrypted"] == 4 and result["new_objects"] == 0
    write(uploads / "secret-plan.txt", b"PLAINTEXT-MARKER " * 100)
    t2 = T0 + timedelta(days=2)
    result = backup_files(session_scope, "uploads", uploads, store, t2, "pass-phrase", clock(t2))
    assert result["new_objects"] == 1
    row = rows("files:uploads")[-1]
    assert row.encrypted
    for obj in objects(store):
        raw = obj.read_bytes()
        assert is_encrypted(obj)
        assert b"PLAINTEXT-MARKER" not in raw and b"alpha file contents" not in raw
    manifest = Path(row.path or "")
    restored = restore_files(manifest, store, tmp_path / "restore", "pass-phrase")
    assert restored["ok"] and tree(tmp_path / "restore") == tree(uploads)
    with pytest.raises(FilesRestoreError):
        restore_files(manifest, store, tmp_path / "no-key", None)
    # One flipped bit in an encrypted object fails its authentication.
    sha = json.loads(manifest.read_bytes())["files"][0]["sha256"]
    victim = store / "files/uploads/objects" / sha[:2] / sha
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x80
    victim.write_bytes(bytes(data))
    with pytest.raises(FilesRestoreError) as caught:
        restore_files(manifest, store, tmp_path / "tampered", "pass-phrase")
    corrupt = {c["path"] for c in caught.value.result["corrupt"]}
    assert corrupt == {"a.txt", "same-as-a.txt"}  # one object, two files


def test_unreadable_file_is_an_error_not_a_crash(
    clean_db: str, tmp_path: Path, uploads: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = uploads / "locked.txt"
    write(locked, b"no entry")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the read fail the way EACCES would
        real = files_mod._sha256_file

        def denied(path: Path) -> tuple[str, int]:
            if path.name == "locked.txt":
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(files_mod, "_sha256_file", denied)
    store = tmp_path / "store"
    result = backup_files(session_scope, "uploads", uploads, store, T0, None, now=clock(T0))
    assert result["state"] == "succeeded" and result["files"] == 5
    assert result["error_count"] == 1
    row = rows("files:uploads")[0]
    assert row.details["errors"][0]["path"] == "locked.txt"
    assert "PermissionError" in row.details["errors"][0]["error"]

    missing = backup_files(session_scope, "gone", tmp_path / "nope", store, T0, None, now=clock(T0))
    assert missing["state"] == "failed" and rows("files:gone")[0].state == "failed"


def test_retention_then_prune_of_file_objects(clean_db: str, tmp_path: Path, uploads: Path) -> None:
    store = tmp_path / "store"
    slots = [T0 + timedelta(days=i) for i in range(3)]
    for i, slot in enumerate(slots):
        write(uploads / "changing.txt", f"version {i}\n".encode(), OLD + i)
        backup_files(session_scope, "uploads", uploads, store, slot, None, now=clock(slot))
    assert len(objects(store)) == 4 + 3
    keep_one = RetentionConfig(hourly=1, daily=0, weekly=0, monthly=0)
    result = apply_retention(
        session_scope, keep_one, now=clock(slots[-1]), kinds=("files:uploads",)
    )
    assert result["deleted_count"] == 2 and result["kept_count"] == 1
    assert len(list((store / "files/uploads/manifests").glob("*.json"))) == 1
    pruned = prune_file_objects(store, "uploads", grace=timedelta(0))
    assert pruned["removed"] == 2 and len(objects(store)) == 5
    latest = Path(rows("files:uploads")[-1].path or "")
    assert restore_files(latest, store, tmp_path / "restore", None)["ok"]
    assert tree(tmp_path / "restore") == tree(uploads)


# --- configuration backups ---------------------------------------------------------------

SECRETS = [
    "tokenXYZ",
    "slack://T000/B000/tokenXYZ",
    "hunter2",
    "s3cr3t-pw",
    "abcTOKEN123",
    "sk_live_ABCDEFGH12345678",
    "postgresql://u:p@h/db",
    "u:p@",
    "k3y-value",
    "mailpass",
]

CONFIG_YAML = """\
platform_url: http://127.0.0.1:8400
channels:
  - name: ops
    url: slack://T000/B000/tokenXYZ
database:
  host: db.internal.example
  password: hunter2
  replicas:
    - {host: r1.example, dsn: "postgresql://admin:s3cr3t-pw@r1/x"}
notes: "callback https://example.com/cb?access_token=abcTOKEN123&page=2"
stripe:
  webhook_secret: whsec_abcdefghijkl
  apiKey: sk_live_ABCDEFGH12345678
mail: "smtp://alerts:mailpass@smtp.example:587"
backups:
  key_tables: [public.users, public.bookings]
"""

ENV_FILE = """\
# platform settings
DATABASE_URL=postgresql://u:p@h/db
export API_KEY="k3y-value"
DEBUG=true
"""


def test_config_backup_redacts_secrets(clean_db: str, tmp_path: Path) -> None:
    cfg = tmp_path / "etc"
    cfg.mkdir()
    (cfg / "eventops.yaml").write_text(CONFIG_YAML)
    (cfg / "platform.env").write_text(ENV_FILE)
    (cfg / "sub").mkdir()
    (cfg / "sub" / "eventops.yaml").write_text("token: hunter2\n")  # same file name
    paths = [cfg / "eventops.yaml", cfg / "platform.env", cfg / "sub/eventops.yaml"]
    store = tmp_path / "store"
    missing = cfg / "absent.yaml"
    result = backup_config_files(session_scope, [*paths, missing], store, T0, None, now=clock(T0))
    assert result["state"] == "succeeded" and result["files"] == 3
    assert result["error_count"] == 1
    out = store / "config" / "20261127T030000Z"
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(written) == {"eventops.yaml", "platform.env", "2-eventops.yaml", "index.json"}
    for name, data in written.items():
        for secret in SECRETS:
            assert secret.encode() not in data, (name, secret)
        assert b"whsec_" not in data
    yaml_copy = files_mod.yaml.safe_load(written["eventops.yaml"])
    assert yaml_copy["channels"][0] == {"name": "ops", "url": files_mod.REDACTED}
    assert yaml_copy["database"]["host"] == "db.internal.example"  # not a secret: kept
    assert yaml_copy["backups"]["key_tables"] == ["public.users", "public.bookings"]
    assert b"DEBUG=true" in written["platform.env"]
    assert b'export API_KEY="***REDACTED***"' in written["platform.env"]

    row = rows("config")[0]
    assert row.state == "succeeded" and row.details["redactions"] >= 9
    assert "absent.yaml" in row.details["errors"][0]["path"]
    again = backup_config_files(session_scope, paths, store, T0, None, now=clock(T0))
    assert "skipped" in again and len(rows("config")) == 1

    t1 = T0 + timedelta(days=1)
    sealed = backup_config_files(session_scope, paths, store, t1, "pass-phrase", clock(t1))
    assert sealed["state"] == "succeeded"
    copy = store / "config" / "20261128T030000Z" / "eventops.yaml"
    assert is_encrypted(copy)
    with open(tmp_path / "opened.yaml", "wb") as out_file:
        decrypt_stream(copy, out_file, "pass-phrase")
    opened = (tmp_path / "opened.yaml").read_bytes()
    assert b"***REDACTED***" in opened
    assert not any(s.encode() in opened for s in SECRETS)


# --- retention ---------------------------------------------------------------------------


def make_history(
    dumps: Path, slots: list[datetime], overrides: dict[int, dict[str, Any]] | None = None
) -> list[int]:
    """One succeeded hourly backup per slot, each with a real file; returns ids in order."""
    dumps.mkdir(parents=True, exist_ok=True)
    values = []
    for i, slot in enumerate(slots):
        path = dumps / f"{i}.dump"
        path.write_bytes(b"dump")
        values.append(
            {
                "kind": "hourly",
                "slot": slot,
                "state": "succeeded",
                "started_at": slot,
                "heartbeat_at": slot,
                "snapshot_at": slot,
                "path": str(path),
                "encrypted": False,
                "tables": {},
                "details": {},
                "verify_state": "unverified",
                **(overrides or {}).get(i, {}),
            }
        )
    with session_scope() as session:
        session.execute(insert(Backup), values)
        return list(session.scalars(select(Backup.id).order_by(Backup.slot)))


def test_retention_tiers_over_sixty_days_of_hourly_backups(clean_db: str, tmp_path: Path) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    slots = [start + timedelta(hours=h) for h in range(60 * 24)]
    assert slots[-1] == datetime(2026, 3, 1, 23, tzinfo=UTC)  # a Sunday, ISO week 9
    make_history(tmp_path / "dumps", slots)
    now = clock(slots[-1] + timedelta(minutes=10))
    result = apply_retention(session_scope, RetentionConfig(), now=now)

    def at(month: int, day: int, hour: int = 23) -> str:
        return datetime(2026, month, day, hour, tzinfo=UTC).isoformat()

    kept = {k["at"]: k["reasons"] for k in result["kept"]}
    tiers = {t: {a for a, r in kept.items() if t in r} for t in ("hourly", "daily", "weekly")}
    assert tiers["hourly"] == {at(3, 1, h) for h in range(24)}
    assert tiers["daily"] == {at(3, 1)} | {at(2, d) for d in range(23, 29)}
    assert tiers["weekly"] == {at(3, 1), at(2, 22), at(2, 15), at(2, 8)}  # Sundays, 23:00
    monthly = {a for a, r in kept.items() if "monthly" in r}
    assert monthly == {at(3, 1), at(2, 28), at(1, 31)}  # 12 allowed, 3 months of history
    assert len(kept) == 24 + 6 + 3 + 1
    assert result["deleted_count"] == 1440 - 34
    # The boundaries: the hour before the hourly tier, the day before the daily one.
    assert at(2, 28, 22) not in kept and at(2, 22, 22) not in kept
    assert at(2, 1) not in kept and at(1, 1, 0) not in kept

    with session_scope() as session:
        live = list(session.scalars(select(Backup).where(Backup.deleted_at.is_(None))))
        total = session.scalar(select(func.count()).select_from(Backup))
    assert total == 1440  # history stays: deleted rows are marked, not removed
    assert {b.slot.isoformat() for b in live} == set(kept)
    assert all(Path(b.path or "").exists() for b in live)
    assert len(list((tmp_path / "dumps").iterdir())) == 34
    assert all(d["file_removed"] for d in result["deleted"])

    assert apply_retention(session_scope, RetentionConfig(), now=now)["deleted_count"] == 0


def test_retention_never_deletes_newest_verified_running_or_in_use(
    clean_db: str, tmp_path: Path
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    slots = [start + timedelta(hours=h) for h in range(10 * 24)]
    verified, running, in_use, gone = 5, 6, 7, 8
    ids = make_history(
        tmp_path / "dumps",
        slots,
        {
            verified: {"verify_state": "verified", "verified_at": slots[verified]},
            running: {"state": "running", "snapshot_at": None},
            9: {"state": "failed"},
        },
    )
    (tmp_path / "dumps" / f"{gone}.dump").unlink()  # already missing: fine
    with session_scope() as session:
        session.execute(
            insert(RestoreRun).values(
                kind="restore-test",
                slot=slots[-1],
                backup_id=ids[in_use],
                state="running",
                started_at=slots[-1],
                heartbeat_at=slots[-1],
                details={},
            )
        )
    tiny = RetentionConfig(hourly=2, daily=0, weekly=0, monthly=0)
    result = apply_retention(session_scope, tiny, now=clock(slots[-1]))
    kept = {k["id"]: k["reasons"] for k in result["kept"]}
    assert kept == {
        ids[-1]: ["hourly", "newest"],
        ids[-2]: ["hourly"],
        ids[verified]: ["newest-verified"],
        ids[in_use]: ["in-use"],
    }
    assert result["running_skipped"] == 1
    deleted = {d["id"]: d for d in result["deleted"]}
    assert ids[running] not in deleted and ids[9] not in deleted
    assert deleted[ids[gone]]["file_removed"] is False
    assert len(deleted) == len(slots) - 4 - 2
    for i in (verified, running, in_use, 9):
        assert (tmp_path / "dumps" / f"{i}.dump").exists()
    with session_scope() as session:
        row = session.get(Backup, ids[running])
        assert row is not None and row.deleted_at is None and row.state == "running"
        row = session.get(Backup, ids[0])
        assert row is not None and row.deleted_at is not None
        assert row.details["deleted_by"] == "retention"
