"""A malformed config is refused whole: nothing of it reaches the running system."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError

from core.security.signatures import BUILTIN, SCANNER_AGENTS
from models import db
from models.config import MAX_DURATION, ConfigError, parse_config
from models.db import session_scope
from models.tables import Check


def migrate(config: Path, database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
    env.update(
        EVENTOPS_DATABASE_URL=database_url,
        EVENTOPS_CONFIG_FILE=str(config),
        EVENTOPS_VAR_DIR=str(tmp_path / "var"),
    )
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def checks_in_database() -> dict[str, tuple[str, float]]:
    with session_scope() as session:
        rows = session.execute(select(Check.name, Check.url, Check.interval_s, Check.enabled))
        return {name: (url, interval) for name, url, interval, enabled in rows if enabled}


def test_config_with_one_bad_check_changes_no_check_at_all(clean_db: str, tmp_path: Path) -> None:
    good = {
        "platform_url": "http://127.0.0.1:9",
        "checks": [
            {"name": "api", "url": "{platform_url}/health", "interval": "1m", "timeout": "2s"},
            {"name": "web", "url": "{platform_url}/", "interval": "1m", "timeout": "2s"},
        ],
    }
    config = tmp_path / "eventops.yaml"
    config.write_text(yaml.safe_dump(good))
    assert migrate(config, clean_db, tmp_path).returncode == 0
    before = checks_in_database()
    assert set(before) == {"api", "web"}

    # The first check changes validly, a new one is added, the last one is broken: applying
    # the good part would leave a config nobody wrote.
    bad = {
        **good,
        "checks": [
            {"name": "api", "url": "{platform_url}/v2", "interval": "5m", "timeout": "2s"},
            {"name": "new", "url": "{platform_url}/new", "interval": "1m", "timeout": "2s"},
            {"name": "web", "url": "{platform_url}/", "interval": "1m", "timeout": "2m"},
        ],
    }
    config.write_text(yaml.safe_dump(bad))
    refused = migrate(config, clean_db, tmp_path)

    assert refused.returncode == 2
    assert "checks[2].timeout: must be less than interval" in refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    assert checks_in_database() == before


SECRET_URL = "http://ops:hunter2@127.0.0.1:9/health?token=s3cret-token"


def config_with(tmp_path: Path, **fields: object) -> Path:
    config = tmp_path / "eventops.yaml"
    checks = [
        {"name": "api", "url": "{platform_url}/health", "interval": "1m", "timeout": "2s"},
        {"name": "web", "url": SECRET_URL, "interval": "1m", "timeout": "2s", **fields},
    ]
    config.write_text(yaml.safe_dump({"platform_url": "http://127.0.0.1:9", "checks": checks}))
    return config


def assert_no_secret_and_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    for secret in ("hunter2", "s3cret-token", "token="):
        assert secret not in output


def test_a_config_the_database_cannot_store_is_refused_at_the_door_and_changes_nothing(
    clean_db: str, tmp_path: Path
) -> None:
    assert migrate(config_with(tmp_path), clean_db, tmp_path).returncode == 0
    before = checks_in_database()

    refused = migrate(config_with(tmp_path, alert_threshold=40000), clean_db, tmp_path)

    assert refused.returncode == 2, refused.stderr
    assert (
        "checks[1].alert_threshold: must be at most 32767 (the database stores it as a smallint)"
        in refused.stderr
    )
    assert_no_secret_and_no_traceback(refused)
    assert checks_in_database() == before


def test_a_statement_the_database_refuses_ends_migrate_in_one_line_without_its_values(
    clean_db: str, tmp_path: Path
) -> None:
    """A refusal no config check can foresee (here a constraint added by hand): exit 1 with
    the database's reason, no traceback, no bound parameters, nothing written."""
    assert migrate(config_with(tmp_path), clean_db, tmp_path).returncode == 0
    before = checks_in_database()
    with db.get_engine().begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE checks ADD CONSTRAINT no_slow_checks CHECK (interval_s < 3600)"
        )
    try:
        refused = migrate(config_with(tmp_path, interval="2h"), clean_db, tmp_path)
    finally:
        with db.get_engine().begin() as conn:
            conn.exec_driver_sql("ALTER TABLE checks DROP CONSTRAINT no_slow_checks")

    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "eventops: the checks could not be written; every check is as it was: new row for "
        'relation "checks" violates check constraint "no_slow_checks"'
    ]
    assert_no_secret_and_no_traceback(refused)
    assert checks_in_database() == before


def test_a_database_error_never_carries_the_statement_s_bound_values(clean_db: str) -> None:
    """The engine hides parameters: a traceback, a log line or a Sentry event shows the SQL,
    never a check URL with its credentials."""
    with pytest.raises(DBAPIError) as error, db.get_engine().begin() as conn:
        conn.execute(
            insert(Check).values(
                name="leaky",
                url=SECRET_URL,
                expected_status=[200],
                interval_s=60,
                timeout_s=2,
                max_body_bytes=1,
                alert_threshold=40000,
                recovery_threshold=1,
                severity="critical",
                group_name="leaky",
                next_due_at=datetime.now(UTC),
            )
        )
    assert "smallint out of range" in str(error.value)
    assert "hunter2" not in str(error.value)
    assert "s3cret-token" not in str(error.value)


def test_start_up_refuses_what_config_check_refuses_with_the_same_lines(
    clean_db: str, tmp_path: Path
) -> None:
    """One validation for both doors: `config check` and a worker's start."""
    config = config_with(tmp_path, alert_threshold=40000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTOPS_")}
    env.update(
        EVENTOPS_DATABASE_URL=clean_db,
        EVENTOPS_BROKER_URL="redis://127.0.0.1:9/0",  # never reached: the config stops it
        EVENTOPS_CONFIG_FILE=str(config),
        EVENTOPS_VAR_DIR=str(tmp_path / "var"),
    )

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [sys.executable, "-m", "workers.cli", *argv],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`eventops {' '.join(argv)}` started with a config the database refuses")

    check, worker = run("config", "check"), run("worker", "-c", "1")

    assert check.returncode == worker.returncode == 2
    assert check.stderr == worker.stderr
    assert "checks[1].alert_threshold: must be at most 32767" in worker.stderr


def test_a_rule_with_the_longest_durations_config_check_accepts_evaluates_and_pages(
    clean_db: str,
) -> None:
    """The cap on durations (models.config.MAX_DURATION) keeps a worker's date arithmetic in
    range: a window and baseline of a century each and a century's escalation delay."""
    from core.rules import evaluate_rules
    from tests.integration.test_rules import T0, add_outcomes, check, configure, every_30s

    century = f"{MAX_DURATION.days}d"
    slow = {"name": "slow", "metric": "response_time", "op": ">", "threshold": 1000}
    fewer_jobs = {"name": "fewer-jobs", "metric": "jobs", "op": "<", "threshold": 0.5}
    config = configure(
        [check("api")],
        [
            slow | {"severity": "critical", "window": century, "escalate_after": century},
            fewer_jobs | {"severity": "warning", "window": century, "baseline": century},
        ],
    )
    add_outcomes("api", *every_30s(["up"] * 5, latency=5000))
    with session_scope() as session:
        summary = evaluate_rules(session, config, T0)
    assert len(summary["opened"]) == 1


# Attack signatures run in Postgres (`path ~* signature`): a pattern Python's `re` compiles but
# Postgres refuses (`a{300}`) passed config check and failed the security tick every time;
# Postgres' own word boundaries (`\m`, as in the built-ins) were refused as bad escapes.
SIGNATURE_PATTERNS = [
    *BUILTIN.values(),
    SCANNER_AGENTS,
    *(r"a{255}", r"a{0,255}", r"a{2,}", r"a{300}", r"a{1,256}", r"(a|b){256}", r"[a{300}]"),
    *(r"a{4294967296}", r"a{3,2}", r"a{2}{3}", r"a{,3}", r"{", r"a{", r"\{1000\}"),
    *(r"{,}", r"a{2a", r"a{300", r"\b+", r"\(?+", r"x{}"),
    *(r"(?P<n>x)", r"(?<n>x)", r"(?>a)", r"(?<=a)b", r"(?<!a)b", r"(?=a)", r"(?!a)"),
    *(r"a*+", r"a++", r"a?+", r"a{2}+", r"\++", r"[+]+", r"a}+", r"a+?", r"x{2,3}?"),
    *(r"\mfoo\M", r"\yfoo\Y", r"[[:alpha:]]+", r"[[:<:]]x", r"(a)\1", r"[^]a]", r"[]a]"),
    *(r"(", r")", r"**", r"a|*b", r"[a-\d]", r"x(?i)y", r"(?i)x", r"(?#c)x", r"\x41", r"café"),
]


@pytest.mark.parametrize("pattern", SIGNATURE_PATTERNS)
def test_a_signature_is_refused_by_config_check_exactly_when_postgres_refuses_it(
    clean_db: str, pattern: str
) -> None:
    try:
        with session_scope() as session:
            session.execute(text("SELECT '' ~* :pattern"), {"pattern": pattern})
        postgres_refuses = False
    except DBAPIError:
        postgres_refuses = True
    for section in ({"extra": {"mine": pattern}}, {"scanner_agents": pattern}):
        try:
            parse_config({"security": {"signatures": section}})
            check_refuses = False
        except ConfigError as error:
            (problem,) = error.problems
            assert "bad regular expression" in problem
            check_refuses = True
        assert check_refuses == postgres_refuses, section
