"""`eventops run`: the whole system in one command, on embedded services when none are given."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import click
from sqlalchemy import select

from core.clock import utcnow
from core.migrate import upgrade
from core.schedule import sync_checks
from models import db
from models.tables import Incident, IncidentEvent
from workers.embedded import EmbeddedPostgres, EmbeddedRedis
from workers.settings import Settings, get_config

FLOWER_PORT = 5555
DASHBOARD_PORT = 8600
DEMO_PLATFORM_DB = "eventops_demo_platform"
STANDALONE_ENV = "standalone.env"


class Standalone:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.var = settings.var_dir
        self.logs = self.var / "logs"
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def run(self) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            env = dict(os.environ)
            env["EVENTOPS_DATABASE_URL"] = stack.enter_context(self._database())
            env["EVENTOPS_BROKER_URL"] = stack.enter_context(self._broker())
            if not self.settings.platform_database_url:
                env["EVENTOPS_PLATFORM_DATABASE_URL"] = self._demo_platform_database(
                    env["EVENTOPS_DATABASE_URL"]
                )
            if not self.settings.backup_key:
                env["EVENTOPS_BACKUP_KEY"] = self._demo_secret("backup.key")
            if not self.settings.ingest_token:
                # The Web Vitals endpoint refuses beacons without one.
                env["EVENTOPS_INGEST_TOKEN"] = self._demo_secret("ingest.token")
            self._write_env_file(env)
            stack.callback(self._remove_env_file)
            stack.callback(self._stop_children)

            db.configure(env["EVENTOPS_DATABASE_URL"])
            say("migrating the database")
            upgrade(env["EVENTOPS_DATABASE_URL"])
            config = get_config()
            with db.session_scope() as session:
                sync_checks(session, config)

            demo_port = self._demo_port(config.platform_url)
            if demo_port:
                self._spawn(
                    "demo",
                    [
                        "-m",
                        "demo.platform",
                        "--port",
                        str(demo_port),
                        "--fail",
                        "supabase",
                        "--hooks-file",
                        str(self.var / "notifications.jsonl"),
                    ],
                    env,
                )
            cli = ["-m", "workers.cli"]
            self._spawn("worker", [*cli, "worker", "-c", "2", "-n", "standalone@%h"], env)
            self._spawn("beat", [*cli, "beat"], env)
            self._spawn("flower", [*cli, "flower", "--port", str(FLOWER_PORT)], env)
            self._spawn("dashboard", [*cli, "dashboard", "--port", str(DASHBOARD_PORT)], env)
            self._banner(config.platform_url, demo_port, env)
            return self._watch()

    @contextlib.contextmanager
    def _database(self) -> Iterator[str]:
        if self.settings.database_url:
            yield self.settings.database_url
            return
        say(f"starting embedded PostgreSQL in {self.var / 'postgres'}")
        server = EmbeddedPostgres(self.var / "postgres").start()
        try:
            yield server.create_database("eventops")
        finally:
            say("stopping embedded PostgreSQL")
            server.stop()

    @contextlib.contextmanager
    def _broker(self) -> Iterator[str]:
        if self.settings.broker_url:
            yield self.settings.broker_url
            return
        say("starting embedded Redis")
        server = EmbeddedRedis(self.var / "redis").start()
        try:
            yield server.url
        finally:
            server.stop()

    def _demo_platform_database(self, eventops_url: str) -> str:
        """A demo platform database beside eventops' own, for backups and audits to work on."""
        from sqlalchemy import make_url

        from core.backups.tools import Conn
        from demo import platform_db

        url = make_url(eventops_url).set(database=DEMO_PLATFORM_DB)
        admin = Conn.from_url(eventops_url)
        with admin.connect() as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_PLATFORM_DB,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DEMO_PLATFORM_DB}"')
        platform = Conn.from_url(url.render_as_string(hide_password=False))
        if not exists:
            say(f"creating the demo platform database {DEMO_PLATFORM_DB}")
            platform_db.apply_schema(platform)
            platform_db.generate(platform, scale=0.2)
        return url.render_as_string(hide_password=False)

    def _demo_secret(self, name: str) -> str:
        """A random secret kept in var/ (0600) across runs: the backup key (so demo backups
        are encrypted too) and the ingestion token."""
        path = self.var / name
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def _write_env_file(self, env: dict[str, str]) -> None:
        """Let `eventops` commands in another terminal find the embedded services."""
        keys = (
            "EVENTOPS_DATABASE_URL",
            "EVENTOPS_BROKER_URL",
            "EVENTOPS_PLATFORM_DATABASE_URL",
            "EVENTOPS_BACKUP_KEY",
            "EVENTOPS_INGEST_TOKEN",
        )
        lines = [f"{key}={env[key]}" for key in keys if key in env]
        path = self.var / STANDALONE_ENV
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

    def _remove_env_file(self) -> None:
        (self.var / STANDALONE_ENV).unlink(missing_ok=True)

    def _demo_port(self, platform_url: str) -> int | None:
        """Serve the demo platform when the config points at a loopback URL and no real
        platform URL was given."""
        if self.settings.platform_url:
            return None
        parsed = urlparse(platform_url)
        if parsed.hostname in ("127.0.0.1", "localhost") and parsed.port:
            return parsed.port
        return None

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
        self.children[name] = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C reaches us once, and we stop children in order.
            start_new_session=True,
        )

    def _banner(self, platform_url: str, demo_port: int | None, env: dict[str, str]) -> None:
        user = self.settings.flower_user
        click.echo("")
        click.secho("eventops is running. Ctrl-C stops everything.", bold=True)
        click.echo(
            f"  Flower (tasks)     http://127.0.0.1:{FLOWER_PORT}   (login {user} / "
            "EVENTOPS_FLOWER_PASSWORD, default 'eventops')"
        )
        click.echo(
            f"  Dashboard (live)   http://127.0.0.1:{DASHBOARD_PORT}   (login "
            f"{self.settings.dashboard_user} / {self._dashboard_password()})"
        )
        token = "EVENTOPS_INGEST_TOKEN" if self.settings.ingest_token else self.var / "ingest.token"
        click.echo(
            f"  Web Vitals beacons http://127.0.0.1:{DASHBOARD_PORT}/ingest/vitals   "
            f"(token: {token})"
        )
        if demo_port:
            click.echo(f"  Demo platform      {platform_url}   (supabase fails on purpose)")
            click.echo(f"  Notifications      {platform_url}/hooks")
            click.echo(
                f"  Heal supabase      curl -X POST {platform_url}/faults/supabase "
                '-d \'{"mode": "ok"}\''
            )
        else:
            click.echo(f"  Platform           {platform_url}")
        click.echo("  Incidents          .venv/bin/eventops incidents list")
        click.echo(
            "  Backups            .venv/bin/eventops backups run && .venv/bin/eventops backups list"
        )
        click.echo("  Checks             .venv/bin/eventops checks list")
        click.echo(f"  Logs               {self.logs}/")
        click.echo(f"  Database           {env['EVENTOPS_DATABASE_URL']}")
        click.echo("")
        click.echo("Incidents and notifications appear below as they happen.")

    def _dashboard_password(self) -> str:
        """The generated password is shown (it lives in var/, 0600); a configured one is not."""
        from web.auth import dashboard_password, password_source

        source = password_source(self.settings)
        return source if source.startswith("EVENTOPS_") else dashboard_password(self.settings)

    def _watch(self) -> int:
        def stop(signum: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        seen_since = utcnow()
        while not self.stopping:
            for name, child in self.children.items():
                if child.poll() is not None:
                    say(f"{name} exited with code {child.returncode}; see {self.logs}/{name}.log")
                    return 1
            with contextlib.suppress(Exception):  # the feed is a courtesy, never fatal
                seen_since = self._print_events(seen_since)
            time.sleep(1)
        say("stopping")
        return 0

    def _print_events(self, since: datetime) -> datetime:
        with db.session_scope() as session:
            rows = session.execute(
                select(IncidentEvent, Incident.title, Incident.severity)
                .join(Incident, Incident.id == IncidentEvent.incident_id)
                .where(IncidentEvent.at > since)
                .order_by(IncidentEvent.at)
            ).all()
        for event, title, severity in rows:
            click.echo(
                f"{event.at:%H:%M:%S}  incident #{event.incident_id} [{severity}] {title}: "
                f"{event.kind}{' - ' + event.detail if event.detail else ''}"
            )
            since = max(since, event.at)
        return since

    def _stop_children(self) -> None:
        # Beat first (no new ticks), then the worker (warm shutdown finishes running tasks).
        for name in ("beat", "flower", "dashboard", "worker", "demo"):
            child = self.children.get(name)
            if child and child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for child in self.children.values():
            try:
                child.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()


def say(message: str) -> None:
    click.echo(f"eventops: {message}", err=True)


def load_standalone_env(var_dir: Path) -> None:
    """Pick up the URLs of a running `eventops run` unless the environment names others."""
    path = var_dir / STANDALONE_ENV
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        os.environ.setdefault(key, value)
