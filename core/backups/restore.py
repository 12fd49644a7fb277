"""Restore a logical backup into a named database: the emergency path of docs/backups.md."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from psycopg import sql
from sqlalchemy.orm import Session

from core.audit import audit_apart
from core.backups.tools import Conn, find_tool, run_tool, server_major
from models.tables import Backup


class RestoreRefused(RuntimeError):
    """A restore that would overwrite something it was not told it may overwrite."""


@contextlib.contextmanager
def plain_archive(backup: Backup, passphrase: str | None) -> Iterator[Path]:
    """The backup as a pg_restore-readable file: itself, or a decrypted temporary copy that
    is deleted afterwards."""
    if backup.path is None:
        raise RestoreRefused(f"backup #{backup.id} has no file")
    path = Path(backup.path)
    if not backup.encrypted:
        yield path
        return
    if passphrase is None:
        raise RestoreRefused(f"backup #{backup.id} is encrypted and EVENTOPS_BACKUP_KEY is not set")
    from core.backups.crypto import decrypt_to_file

    plain = decrypt_to_file(path, path.parent, passphrase)
    try:
        yield plain
    finally:
        plain.unlink(missing_ok=True)


def restore_into_database(
    session: Session,
    source: Conn,
    backup_id: int,
    target_db: str,
    passphrase: str | None,
    *,
    overwrite_source: bool = False,
    replace_existing: bool = False,
) -> dict[str, object]:
    """Restore backup `backup_id` into database `target_db` on the source's server.

    Refuses to touch the source database unless `overwrite_source`, and an existing target
    unless `replace_existing` (which drops and recreates it). Returns timings for the log.
    """
    backup = session.get(Backup, backup_id)
    if backup is None or backup.deleted_at is not None:
        raise RestoreRefused(f"no backup #{backup_id} on disk")
    if backup.kind not in ("hourly", "daily"):
        raise RestoreRefused(f"backup #{backup_id} is a {backup.kind} backup, not a database dump")
    if target_db == source.dbname and not overwrite_source:
        raise RestoreRefused(
            f"{target_db!r} is the source database; pass the explicit overwrite flag to "
            "restore over it"
        )
    started = time.monotonic()
    restore_details = {"backup": backup_id, "target": target_db, "overwrite": overwrite_source}
    audit_apart(
        session, "eventops", "backup.restore.start", f"backups:{backup_id}", restore_details
    )
    admin = source.with_db("postgres")
    with admin.connect() as db:
        exists = db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target_db,)).fetchone()
        if exists and not (replace_existing or (overwrite_source and target_db == source.dbname)):
            raise RestoreRefused(
                f"database {target_db!r} exists; choose another name or pass --replace"
            )
        if exists:
            db.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(target_db)))
        db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target_db)))
    target = source.with_db(target_db)
    with plain_archive(backup, passphrase) as archive:
        run_tool(
            [
                find_tool("pg_restore", server_major(admin)),
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "-d",
                target_db,
                archive,
            ],
            target,
        )
    result = {
        "backup": backup_id,
        "target": target_db,
        "snapshot_at": backup.snapshot_at.isoformat() if backup.snapshot_at else None,
        "seconds": round(time.monotonic() - started, 3),
    }
    audit_apart(session, "eventops", "backup.restore.finish", f"backups:{backup_id}", result)
    return result
