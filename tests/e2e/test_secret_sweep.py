"""No secret leaks: marker secrets planted everywhere a secret can be configured, then every
output of a running system searched for them.

Planted: a password in eventops' database URL, every SecretStr setting (platform database
URL, backup key, Flower password, Sentry DSN, dead man's switch, ...), a token in a channel
URL whose receiver fails (so delivery errors are recorded), and credentials and a token in a
check URL that fails (so probe errors are recorded). Searched: the worker's, beat's and
Flower's logs, every key and value in the broker's Redis database (task arguments, results),
Flower's task list pages and API, a data dump of eventops' Postgres database (outcome details,
delivery errors, incident timelines; not the check URLs themselves, which are where probes
go), and what the CLI prints, including its error messages for a bad config.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from pydantic import SecretStr
from sqlalchemy import func, select

from core.backups.tools import Conn, find_tool, server_major
from models.db import session_scope
from models.tables import Notification, Outcome
from tests.faults.harness import Cluster, wait_for, wait_for_ticks
from tests.receivers import WebhookReceiver
from workers.embedded import free_port
from workers.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

MARK = "Zq7MARKERsecret"


def marker(name: str) -> str:
    return f"{MARK}{name.replace('_', '')}"


def secret_env(database_url: str) -> dict[str, str]:
    """A marker value for every secret setting, shaped so that it validates."""
    shaped = {
        "platform_database_url": f"postgresql://postgres:{marker('pdb')}@127.0.0.1:5432/test",
        # The marker is the DSN's secret key (the legacy `public:secret@` form): its public
        # key is public by design (browsers send it), and Sentry's Celery integration puts
        # it in every task message's baggage header, which sits in Redis while queued.
        "sentry_dsn": f"http://publickey:{marker('dsn')}@127.0.0.1:9/1",
        "deadmans_switch_url": f"http://127.0.0.1:9/ping/{marker('dms')}",
    }
    env = {}
    for name, field in Settings.model_fields.items():
        if field.annotation in (SecretStr, SecretStr | None):
            env[f"EVENTOPS_{name.upper()}"] = shaped.get(name, marker(name))
    # eventops' own database URL is not a SecretStr (the launcher prints where it is), but
    # its password is a secret all the same. Postgres trusts local connections here, so
    # the password is sent to nobody and the URL still works.
    env["EVENTOPS_DATABASE_URL"] = database_url.replace(
        "postgres@", f"postgres:{marker('ownpw')}@", 1
    )
    return env


def redis_contents(url: str) -> str:
    client = redis.Redis.from_url(url)
    parts: list[str] = []
    try:
        for key in client.scan_iter(count=500):
            kind = client.type(key).decode()
            parts.append(key.decode(errors="replace"))
            if kind == "string":
                parts.append(str(client.get(key)))
            elif kind == "list":
                parts += map(str, client.lrange(key, 0, -1))
            elif kind == "hash":
                parts += map(str, client.hgetall(key).items())
            elif kind == "set":
                parts += map(str, client.smembers(key))
            elif kind == "zset":
                parts += map(str, client.zrange(key, 0, -1))
    finally:
        client.close()
    return "\n".join(parts)


def postgres_dump(database_url: str) -> str:
    """Every row of eventops' database but the checks table: a check's URL is where the
    probe goes, stored there so that workers read it instead of getting it in task
    arguments. That is storage, not output; everything derived from it is searched."""
    # The server's own pg_dump (the embedded server is a newer major than Debian's), reached
    # the way the backups reach theirs: TCP or a Unix socket, from the PG* variables.
    conn = Conn.from_url(database_url)
    done = subprocess.run(
        [str(find_tool("pg_dump", server_major(conn))), "--data-only",
         "--exclude-table-data=checks"],
        capture_output=True, text=True, timeout=120, check=True, env=conn.env(),
    )  # fmt: skip
    return done.stdout


def test_no_planted_secret_appears_in_any_output(
    cluster: Callable[[Path], Cluster], clean_db: str, clean_redis: str, tmp_path: Path
) -> None:
    with WebhookReceiver() as hook:
        hook.failures_left = 10_000  # every delivery fails: errors get recorded
        channel = hook.apprise_url.replace("json://", f"json://user:{marker('hook')}@", 1)
        config = tmp_path / "eventops.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "platform_url": "http://127.0.0.1:9",
                    "network": {"allow_internal": ["127.0.0.0/8"]},
                    "checks": [
                        {
                            "name": "api",
                            "url": f"http://u:{marker('basic')}@127.0.0.1:9/h?token={marker('q')}",
                            "interval": "3s",
                            "timeout": "1s",
                        }
                    ],
                    "channels": [{"name": "hook", "url": channel}],
                    "policies": {"critical": {"steps": [{"after": "0s", "channels": ["hook"]}]}},
                }
            )
        )
        procs = cluster(config)
        procs.env.update(secret_env(clean_db))
        flower_port = free_port()
        procs.start("worker", "worker", "-c", "2", "-n", "worker@%h")
        procs.start("beat", "beat")
        procs.start("flower", "flower", "--port", str(flower_port))
        wait_for_ticks(procs)
        procs.run("migrate")

        def delivery_failed() -> bool:
            with session_scope() as session:
                return bool(
                    session.scalar(
                        select(func.count())
                        .select_from(Notification)
                        .where(Notification.last_error.is_not(None))
                    )
                )

        wait_for("a failed delivery with its error recorded", delivery_failed, 60)
        with session_scope() as session:
            assert session.scalar(select(func.count()).select_from(Outcome)), "no outcome"

        auth = ("admin", secret_env(clean_db)["EVENTOPS_FLOWER_PASSWORD"])
        flower = f"http://127.0.0.1:{flower_port}"
        wait_for("Flower to answer", lambda: _get(f"{flower}/api/tasks", auth), 60)
        flower_pages = "\n".join(
            _get(f"{flower}{path}", auth) for path in ("/api/tasks", "/tasks", "/workers", "/")
        )
        assert "probes.run_batch" in flower_pages, "Flower saw no probe task: nothing searched"

        cli_outputs = [
            procs.run("config", "check"),
            procs.run("checks", "list", "--json"),
            procs.run("incidents", "list", "--json"),
        ]
        bad = tmp_path / "bad.yaml"
        bad.write_text(
            yaml.safe_dump(
                {"channels": [{"name": "x", "url": f"nosuchscheme://{marker('badurl')}@h/p"}]}
            )
        )
        refused = subprocess.run(
            [sys.executable, "-m", "workers.cli", "config", "check", str(bad)],
            env={**procs.env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        cli_outputs += [refused.stdout, refused.stderr]

        procs.stop()
        outputs = {
            "worker log": procs.log("worker"),
            "beat log": procs.log("beat"),
            "flower log": procs.log("flower"),
            "redis": redis_contents(clean_redis),
            "flower pages": flower_pages,
            "postgres": postgres_dump(clean_db),
            "cli": "\n".join(cli_outputs),
        }
    leaks = {where: out.count(MARK) for where, out in outputs.items() if MARK in out}
    assert leaks == {}, _show(outputs, leaks)
    # The search would have seen them: the outputs are not empty.
    assert all(outputs.values())


def _get(url: str, auth: tuple[str, str]) -> str:
    try:
        reply = httpx.get(url, auth=auth, timeout=5)
    except httpx.HTTPError:
        return ""
    return reply.text if reply.status_code == 200 else ""


def _show(outputs: dict[str, str], leaks: dict[str, int]) -> str:
    lines = []
    for where in leaks:
        for line in outputs[where].splitlines():
            if MARK in line:
                lines.append(f"{where}: {line[:300]}")
    return "\n".join(lines[:30])
