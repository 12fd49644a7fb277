"""Log ingestion with real files, real renames and truncation, into real Postgres."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from core.logs.ingest import ingest_all, ingest_source
from models.config_reports import LogsConfig, LogSourceConfig
from models.db import session_scope
from models.logs import LogEntry, LogFile

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def line(n: int, level: str = "info", message: str | None = None, **extra: Any) -> str:
    document = {
        "timestamp": (T0 + timedelta(seconds=n)).isoformat(),
        "level": level,
        "message": message or f"request {n} served",
        "service": "api",
        **extra,
    }
    return json.dumps(document) + "\n"


def append(path: Path, *lines: str) -> None:
    with path.open("a") as handle:
        handle.writelines(lines)


def source(path: Path | str, **overrides: Any) -> LogSourceConfig:
    return LogSourceConfig.model_validate(
        {"name": "app", "kind": "application", "path": str(path), **overrides}
    )


def messages() -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(LogEntry.message).order_by(LogEntry.at)))


def test_only_new_whole_lines_are_read_and_a_partial_line_waits(
    clean_db: str, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    append(log, line(1), line(2))
    config = LogsConfig(sources=[source(log)])
    assert ingest_all(session_scope, config)["app"]["entries"] == 2
    # Half a line, then nothing new: it is not read until its newline arrives.
    with log.open("a") as handle:
        handle.write(line(3)[:20])
    assert ingest_all(session_scope, config)["app"]["entries"] == 0
    with log.open("a") as handle:
        handle.write(line(3)[20:])
    append(log, line(4))
    assert ingest_all(session_scope, config)["app"]["entries"] == 2
    assert messages() == [f"request {n} served" for n in (1, 2, 3, 4)]


def test_a_renamed_file_is_finished_and_the_new_file_read_from_the_start(
    clean_db: str, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    append(log, line(1), line(2))
    config = LogsConfig(sources=[source(log)])
    ingest_all(session_scope, config)
    # Lines written just before rotation, then rotation by rename, then a new file.
    append(log, line(3), line(4))
    os.rename(log, tmp_path / "app.log.1")
    append(log, line(5))
    summary = ingest_all(session_scope, config)["app"]
    assert summary["entries"] == 3
    assert messages() == [f"request {n} served" for n in range(1, 6)]
    # Nothing is read twice on the next run.
    assert ingest_all(session_scope, config)["app"]["entries"] == 0
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(LogEntry)) == 5


def test_a_truncated_file_restarts_at_zero(clean_db: str, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, line(1), line(2), line(3))
    config = LogsConfig(sources=[source(log)])
    ingest_all(session_scope, config)
    with log.open("w") as handle:  # truncate in place, same inode
        handle.write(line(10))
    summary = ingest_all(session_scope, config)["app"]
    assert summary == {**summary, "entries": 1, "restarts": 1}
    assert messages()[-1] == "request 10 served"
    with session_scope() as session:
        assert session.scalar(select(LogFile.restarts)) == 1


def test_copytruncate_rotation_reads_only_the_copied_tail(clean_db: str, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    append(log, line(1), line(2))
    config = LogsConfig(sources=[source(log)])
    ingest_all(session_scope, config)
    append(log, line(3))
    # logrotate's copytruncate: copy to app.log.1 (a new inode), empty the original.
    (tmp_path / "app.log.1").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    append(log, line(4))
    assert ingest_all(session_scope, config)["app"]["entries"] == 2
    assert messages() == [f"request {n} served" for n in range(1, 5)]


def test_copytruncate_is_followed_even_when_the_original_grew_past_its_old_offset(
    clean_db: str, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    append(log, line(1))
    config = LogsConfig(sources=[source(log)])
    ingest_all(session_scope, config)
    append(log, line(2))
    (tmp_path / "app.log.1").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    append(log, *(line(n) for n in range(3, 9)))  # longer than before the truncation
    assert ingest_all(session_scope, config)["app"]["entries"] == 7
    assert messages() == [f"request {n} served" for n in range(1, 9)]


def test_malformed_lines_are_counted_and_sampled_and_the_rest_is_ingested(
    clean_db: str, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    append(
        log,
        line(1),
        "this is not json\n",
        "[1, 2, 3]\n",
        json.dumps({"timestamp": "yesterday", "message": "x"}) + "\n",
        json.dumps({"timestamp": T0.isoformat()}) + "\n",
        "\n",
        line(2),
    )
    summary = ingest_all(session_scope, LogsConfig(sources=[source(log)]))["app"]
    assert (summary["entries"], summary["malformed"]) == (2, 4)
    with session_scope() as session:
        row = session.scalars(select(LogFile)).one()
        reasons = [sample["reason"] for sample in row.malformed_sample]
    assert row.malformed == 4
    assert reasons == [
        "not JSON (JSONDecodeError)",
        "not a JSON object",
        "timestamp 'yesterday' is not ISO 8601",
        "no 'message'",
    ]


def test_a_nul_or_nan_line_is_stored_or_rejected_alone_never_failing_its_batch(
    clean_db: str, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    append(
        log,
        line(1, message="bad byte \u0000 in a path", path="/x\u0000.php"),
        line(2, latency=float("nan")),
        line(3),
    )
    summary = ingest_all(session_scope, LogsConfig(sources=[source(log)]))["app"]
    assert (summary["entries"], summary["malformed"]) == (2, 1)
    assert messages() == ["bad byte \\x00 in a path", "request 3 served"]
    with session_scope() as session:
        row = session.scalars(select(LogFile)).one()
    assert row.malformed_sample[0]["reason"] == "nan is not a JSON number"


def test_a_directory_source_with_a_field_mapping_and_four_kinds(
    clean_db: str, tmp_path: Path
) -> None:
    directory = tmp_path / "security"
    directory.mkdir()
    document = {"ts": 1_790_000_000_000, "log": {"severity": "ERROR"}, "msg": "denied", "ip": "x"}
    (directory / "auth.jsonl").write_text(json.dumps(document) + "\n")
    (directory / "old.jsonl.gz").write_bytes(b"\x1f\x8bnot read")
    app_log = tmp_path / "app.log"
    append(app_log, line(1))
    config = LogsConfig(
        sources=[
            source(app_log),
            LogSourceConfig.model_validate(
                {
                    "name": "auth",
                    "kind": "security",
                    "path": str(directory),
                    "fields": {"timestamp": "ts", "level": "log.severity", "message": "msg"},
                    "service": "auth-proxy",
                }
            ),
        ]
    )
    result = ingest_all(session_scope, config)
    assert (result["app"]["entries"], result["auth"]["entries"]) == (1, 1)
    with session_scope() as session:
        entry = session.scalars(select(LogEntry).where(LogEntry.source == "auth")).one()
    assert (entry.kind, entry.level, entry.service, entry.message) == (
        "security",
        "error",
        "auth-proxy",
        "denied",
    )
    assert entry.at == datetime.fromtimestamp(1_790_000_000, UTC)
    assert entry.attributes == {"log": {"severity": "ERROR"}, "ip": "x"}
    # An error-level entry carries its pattern's fingerprint; an info one does not.
    assert entry.fingerprint is not None


def test_a_glob_source_reads_many_lines_in_batches(clean_db: str, tmp_path: Path) -> None:
    for name in ("a.jsonl", "b.jsonl"):
        append(tmp_path / name, *(line(n) for n in range(2500)))
    config = LogsConfig(sources=[source(tmp_path / "*.jsonl")], batch_size=1000)
    summary = ingest_source(session_scope, config.sources[0], config)
    assert (summary.files, summary.entries) == (2, 5000)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(LogEntry)) == 5000


def test_a_source_that_matches_no_file_says_so_and_others_go_on(
    clean_db: str, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    append(log, line(1))
    config = LogsConfig(
        sources=[
            source(tmp_path / "missing" / "*.jsonl", name="gone"),
            source(log),
        ]
    )
    result = ingest_all(session_scope, config)
    assert result["gone"]["errors"] == [f"{tmp_path}/missing/*.jsonl: no file matches"]
    assert result["app"]["entries"] == 1
