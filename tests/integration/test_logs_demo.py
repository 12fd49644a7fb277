"""The demo platform logs, all four kinds, through ingestion and pattern analysis: every
count and pattern is the one the generator planted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from core.logs.ingest import ingest_all
from core.logs.patterns import analyze
from demo.platform_logs import BURST_COUNT, write_demo_logs
from models.db import session_scope
from models.logs import ErrorPattern, LogEntry
from models.tables import Incident
from tests.conftest import make_config

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def test_the_demo_logs_ingest_to_their_known_counts_patterns_and_one_burst(
    clean_db: str, tmp_path: Path
) -> None:
    known = write_demo_logs(tmp_path, NOW)
    config = make_config(
        logs={
            "sources": [
                {"name": kind, "kind": kind, "path": str(tmp_path / f"{kind}.jsonl")}
                for kind in ("application", "system", "security", "business")
            ],
            "patterns": {"burst_count": 10, "burst_window": "5m"},
        }
    )
    result = ingest_all(session_scope, config.logs, NOW)
    assert {kind: r["entries"] for kind, r in result.items()} == known["lines"]
    with session_scope() as session:
        errors = dict(
            session.execute(
                select(LogEntry.kind, func.count())
                .where(LogEntry.fingerprint.is_not(None))
                .group_by(LogEntry.kind)
            ).all()
        )
        summary = analyze(session, config, NOW + timedelta(minutes=1))
    assert errors == {kind: n for kind, n in known["errors"].items() if n}
    # payments' recurring error, maps' burst, one system and one security error.
    assert (summary["new"], summary["entries"], summary["incidents_opened"]) == (
        4,
        sum(known["errors"].values()),
        1,
    )
    with session_scope() as session:
        templates = {
            p.service: (p.template, p.occurrences) for p in session.scalars(select(ErrorPattern))
        }
        incident = session.scalars(select(Incident)).one()
    assert templates["payments"] == (known["patterns"]["payments"], 60)
    assert templates["maps"] == (known["patterns"]["maps"], BURST_COUNT)
    assert incident.labels["service"] == "maps"
