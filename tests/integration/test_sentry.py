"""Sentry with the real SDK, sending to a local HTTP server that receives its envelopes:
tags and failure classes arrive, planted secrets and personal data do not."""

from __future__ import annotations

import copy
import errno
import gzip
import json
import logging
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import kombu.exceptions
import psycopg
import pydantic
import pytest
import redis.exceptions
import sentry_sdk
import sqlalchemy.exc
from billiard.exceptions import SoftTimeLimitExceeded
from celery.beat import Scheduler
from celery.signals import beat_init, celeryd_init

from beat_schedule import BEAT_SCHEDULE
from models.config import ConfigError, parse_config
from workers import selfmon_signals
from workers.app import app
from workers.observability import classify, init_sentry, init_sentry_from_environment
from workers.settings import Settings, SettingsError, get_config, get_settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The planted secrets. Every one contains "MARKER": no received byte may.
CHANNEL_URL = "json://hook.example/secret-MARKER-1"
CHANNEL_SEGMENT = "secret-MARKER-1"
DB_PASSWORD = "MARKER-2"
PLATFORM_DB_URL = f"postgresql://backup:{DB_PASSWORD}@127.0.0.1:{_closed_port()}/platform"
BEARER = "Bearer MARKER-3"
EMAIL = "ana.MARKER-4@example.test"
TOKEN = "MARKER-5"
CALLBACK_URL = f"https://api.example.test/callback?token={TOKEN}&vendor=7"

RELEASE = "eventops@test-sentry"
ENVIRONMENT = "sentry-test"


# --- the receiving end ------------------------------------------------------------------


class Envelope:
    def __init__(self, path: str, headers: dict[str, str], raw: bytes) -> None:
        self.path = path
        self.headers = headers
        self.raw = raw  # decompressed, exactly as sent
        self.header, self.items = parse_envelope(raw)

    def payloads(self, item_type: str) -> list[dict[str, Any]]:
        return [json.loads(body) for head, body in self.items if head.get("type") == item_type]


def parse_envelope(raw: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """Envelope format: a JSON header line, then per item a JSON header line and a payload
    of `length` bytes (or up to the next newline when there is no length)."""
    first, _, rest = raw.partition(b"\n")
    items = []
    while rest.strip():
        item_line, _, rest = rest.partition(b"\n")
        item_header = json.loads(item_line)
        length = item_header.get("length")
        if length is None:
            body, _, rest = rest.partition(b"\n")
        else:
            body, rest = rest[:length], rest[length:]
            rest = rest.removeprefix(b"\n")
        items.append((item_header, body))
    return json.loads(first), items


def decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # the SDK only picks br when it is installed

        return bytes(brotli.decompress(body))
    assert encoding in ("", "identity"), f"unexpected Content-Encoding {encoding}"
    return body


class EnvelopeReceiver:
    """A Sentry ingest stand-in: stores every envelope posted to /api/<project>/envelope/."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.other_requests: list[str] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                raw = decode_body(body, self.headers.get("Content-Encoding", ""))
                with receiver.changed:
                    if self.path.endswith("/envelope/"):
                        receiver.envelopes.append(Envelope(self.path, dict(self.headers), raw))
                    else:
                        receiver.other_requests.append(self.path)
                    receiver.changed.notify_all()
                self._reply(b"{}")

            def do_GET(self) -> None:  # the tasks' own outgoing HTTP calls land here
                self._reply(b"ok")

            def _reply(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.dsn = f"http://publickey@127.0.0.1:{self.port}/1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def clear(self) -> None:
        with self.changed:
            self.envelopes.clear()
            self.other_requests.clear()

    def wait_for(self, find: Callable[[list[Envelope]], Any], timeout: float = 10.0) -> Any:
        sentry_sdk.flush(timeout=timeout)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = find(list(self.envelopes))
                if found:
                    return found
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"not received in {timeout}s; got {self.summary()}"
                self.changed.wait(remaining)

    def summary(self) -> list[list[str]]:
        return [[str(h.get("type")) for h, _ in e.items] for e in self.envelopes]

    def raw_bytes(self) -> bytes:
        """Everything received: request lines, HTTP headers and decoded envelopes."""
        with self.changed:
            return (
                b"\n".join(
                    e.path.encode() + json.dumps(e.headers).encode() + e.raw for e in self.envelopes
                )
                + "\n".join(self.other_requests).encode()
            )


@pytest.fixture(scope="module")
def receiver() -> Iterator[EnvelopeReceiver]:
    server = EnvelopeReceiver()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def _stop_sentry() -> None:
    client = sentry_sdk.get_client()
    if client.is_active():
        client.flush(timeout=5)
        client.close(timeout=5)
    # Back to the SDK's non-recording client: later tests send nothing anywhere.
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def sentry_env(
    receiver: EnvelopeReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[EnvelopeReceiver]:
    """The environment of a deployed worker or beat: DSN, release, platform database and a
    config file whose channel URL carries a token. Sentry is started by the hooks."""
    config_file = tmp_path / "eventops.yaml"
    config_file.write_text(
        "channels:\n"
        f"  - name: hook\n    url: {CHANNEL_URL}\n"
        "policies:\n  critical:\n    steps: [{after: 0s, channels: [hook]}]\n"
    )
    monkeypatch.setenv("EVENTOPS_SENTRY_DSN", receiver.dsn)
    monkeypatch.setenv("EVENTOPS_ENVIRONMENT", ENVIRONMENT)
    monkeypatch.setenv("EVENTOPS_RELEASE", RELEASE)
    monkeypatch.setenv("EVENTOPS_PLATFORM_DATABASE_URL", PLATFORM_DB_URL)
    monkeypatch.setenv("EVENTOPS_CONFIG_FILE", str(config_file))
    get_settings.cache_clear()
    get_config.cache_clear()
    receiver.clear()
    try:
        yield receiver
    finally:
        _stop_sentry()
        # monkeypatch restores the environment after this; the next read sees it.
        get_settings.cache_clear()
        get_config.cache_clear()


# --- tasks that fail, leaking secrets on the way ------------------------------------------


def _leak_secrets(receiver_url: str) -> None:
    """What real task code does with secrets in reach: logs, HTTP calls, tool command lines,
    headers in breadcrumbs, extra data and contexts."""
    logging.getLogger("eventops.notify").warning("notifying %s for %s", CHANNEL_URL, EMAIL)
    httpx.get(f"{receiver_url}/ping", params={"token": TOKEN, "check": "api"}, timeout=5)
    subprocess.run(["true", f"--dbname={PLATFORM_DB_URL}"], check=True)
    sentry_sdk.add_breadcrumb(
        category="http",
        message="POST /hooks",
        data={"headers": {"Authorization": BEARER, "Accept": "*/*"}},
    )
    sentry_sdk.set_extra("request", f"Authorization: {BEARER}\nAccept: */*")
    sentry_sdk.set_extra("note", f"password {DB_PASSWORD}, hook {CHANNEL_SEGMENT}")
    sentry_sdk.set_context("vendor", {"contact": EMAIL, "callback": CALLBACK_URL})


@app.task(name="tests.sentry.infrastructure")
def fail_infrastructure(receiver_url: str) -> None:
    _leak_secrets(receiver_url)
    # A real refused connection, with the password in the URL.
    psycopg.connect(PLATFORM_DB_URL, connect_timeout=5)


@app.task(name="tests.sentry.configuration")
def fail_configuration(receiver_url: str) -> None:
    _leak_secrets(receiver_url)
    parse_config({"channels": [{"name": "hook", "url": "no-scheme"}]})


@app.task(name="tests.sentry.permanent")
def fail_permanent(receiver_url: str) -> None:
    _leak_secrets(receiver_url)
    raise ValueError(f"no vendor for {EMAIL}; callback {CALLBACK_URL}")


@app.task(name="tests.sentry.succeed")
def succeed() -> str:
    return "done"


def _event_of(task_name: str) -> Callable[[list[Envelope]], dict[str, Any] | None]:
    def find(envelopes: list[Envelope]) -> dict[str, Any] | None:
        for envelope in envelopes:
            for event in envelope.payloads("event"):
                if event.get("extra", {}).get("celery-job", {}).get("task_name") == task_name:
                    return event
        return None

    return find


def _assert_no_secret_arrived(receiver: EnvelopeReceiver) -> None:
    raw = receiver.raw_bytes()
    assert raw, "nothing was received"
    for secret in (CHANNEL_URL, CHANNEL_SEGMENT, DB_PASSWORD, BEARER, EMAIL, TOKEN, "MARKER"):
        assert secret.encode() not in raw, f"{secret!r} reached Sentry"


def _assert_scrubbed_not_dropped(event: dict[str, Any]) -> None:
    """The leaks were scrubbed in place, not lost: the event still says what happened."""
    crumbs = event["breadcrumbs"]["values"]
    by_category = {c.get("category"): c for c in crumbs}
    assert by_category["http"]["data"]["headers"] == {
        "Authorization": "[redacted]",
        "Accept": "*/*",
    }
    assert "notifying [redacted] for [email]" in by_category["eventops.notify"]["message"]
    # The whole URL is a known secret; a URL not known would lose its userinfo only.
    assert by_category["subprocess"]["message"] == "true --dbname=[redacted]"
    httpx_crumb = next(c for c in crumbs if c.get("type") == "http" and "url" in c["data"])
    assert httpx_crumb["data"]["http.query"] == "token=[redacted]&check=api"
    assert event["extra"]["request"] == "Authorization: [redacted]\nAccept: */*"
    assert event["extra"]["note"] == "password [redacted], hook [redacted]"
    assert event["contexts"]["vendor"]["contact"] == "[email]"
    # Locals are off (workers/observability.py says why).
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert frames and not any("vars" in f for f in frames)


def _assert_tags(event: dict[str, Any], failure_class: str, priority: str, level: str) -> None:
    assert event["release"] == RELEASE
    assert event["environment"] == ENVIRONMENT
    assert event["tags"]["process"] == "worker"
    assert event["tags"]["failure_class"] == failure_class
    assert event["tags"]["priority"] == priority
    assert event["level"] == level


# --- the tests ----------------------------------------------------------------------------


def test_infrastructure_failure_arrives_classified_and_scrubbed(
    sentry_env: EnvelopeReceiver,
) -> None:
    assert init_sentry_from_environment("worker") is True
    result = fail_infrastructure.apply(args=[sentry_env.url])
    assert isinstance(result.result, psycopg.OperationalError)

    event = sentry_env.wait_for(_event_of("tests.sentry.infrastructure"))

    _assert_tags(event, "infrastructure", "high", "error")
    assert event["exception"]["values"][-1]["type"] == "OperationalError"
    _assert_no_secret_arrived(sentry_env)
    _assert_scrubbed_not_dropped(event)


def test_configuration_failure_arrives_classified_and_scrubbed(
    sentry_env: EnvelopeReceiver,
) -> None:
    # The worker's own start-up hook, as `celery worker` fires it.
    celeryd_init.send(sender="celery@test", instance=None, conf=app.conf, options={})
    assert sentry_sdk.get_client().is_active()

    fail_configuration.apply(args=[sentry_env.url])
    event = sentry_env.wait_for(_event_of("tests.sentry.configuration"))

    _assert_tags(event, "configuration", "high", "error")
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "ConfigError"
    assert "channels[0].url: must be an Apprise URL" in exception["value"]
    _assert_no_secret_arrived(sentry_env)
    _assert_scrubbed_not_dropped(event)


def test_programming_error_arrives_as_permanent_with_the_email_and_token_scrubbed(
    sentry_env: EnvelopeReceiver,
) -> None:
    assert init_sentry_from_environment("worker") is True
    fail_permanent.apply(args=[sentry_env.url])
    event = sentry_env.wait_for(_event_of("tests.sentry.permanent"))

    _assert_tags(event, "permanent", "high", "error")
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "ValueError"
    assert exception["value"] == (
        "no vendor for [email]; callback "
        "https://api.example.test/callback?token=[redacted]&vendor=7"
    )
    _assert_no_secret_arrived(sentry_env)
    _assert_scrubbed_not_dropped(event)
    # Task arguments stay out too (send_default_pii=False).
    assert event["extra"]["celery-job"]["args"] == "[Filtered]"


@pytest.fixture
def beat_started(sentry_env: EnvelopeReceiver) -> Iterator[None]:
    """beat_init sent in this process (in beat's environment) to every receiver; the
    beat-process mark thread it also starts is stopped afterwards, or it would stamp every
    later test's database for the rest of the session."""
    beat_init.send(sender=None)
    yield
    selfmon_signals._stop_threads()


def test_beat_sends_crons_check_ins_for_minute_schedules_only(
    sentry_env: EnvelopeReceiver, beat_started: None
) -> None:
    published: dict[str, dict[str, Any]] = {}

    class Unpublished(Scheduler):
        # Stops where beat would publish to Redis: the Sentry part happens before this.
        def apply_async(
            self, entry: Any, producer: Any = None, advance: bool = True, **_: Any
        ) -> None:
            published[entry.name] = copy.deepcopy(entry.options)

    scheduler = Unpublished(app=app, lazy=True)
    scheduler.merge_inplace(copy.deepcopy(BEAT_SCHEDULE))
    scheduler.apply_entry(scheduler.schedule["monitor-backups"])
    scheduler.apply_entry(scheduler.schedule["dispatch-due-checks"])

    def check_ins(envelopes: list[Envelope]) -> list[dict[str, Any]]:
        return [c for e in envelopes for c in e.payloads("check_in")]

    (started,) = sentry_env.wait_for(check_ins)
    assert started["monitor_slug"] == "monitor-backups"
    assert started["status"] == "in_progress"
    assert started["monitor_config"]["schedule"] == {
        "type": "interval",
        "value": 5,
        "unit": "minute",
    }
    assert started["release"] == RELEASE
    assert started["environment"] == ENVIRONMENT
    # A 2 s tick cannot be a Crons monitor: excluded, so no check-in and no headers.
    headers = published["monitor-backups"]["headers"]
    assert headers["sentry-monitor-slug"] == "monitor-backups"
    assert "sentry-monitor-slug" not in published["dispatch-due-checks"].get("headers", {})

    # The worker side closes the check-in when the task it carried finishes.
    init_sentry_from_environment("worker")
    succeed.apply(headers=headers)
    done = sentry_env.wait_for(
        lambda envelopes: [c for c in check_ins(envelopes) if c["status"] == "ok"]
    )
    assert done[0]["check_in_id"] == started["check_in_id"]
    _assert_no_secret_arrived(sentry_env)


def test_without_a_dsn_nothing_is_sent(receiver: EnvelopeReceiver) -> None:
    receiver.clear()
    _stop_sentry()
    try:
        settings = Settings(sentry_dsn=None, platform_database_url=PLATFORM_DB_URL)
        assert init_sentry(settings, process="worker") is False
        assert not sentry_sdk.get_client().is_active()
        fail_permanent.apply(args=[receiver.url])
        sentry_sdk.flush(timeout=2)
        time.sleep(0.5)
        assert receiver.envelopes == []
    finally:
        _stop_sentry()


def test_a_broken_sentry_setup_never_stops_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        assert init_sentry(Settings(sentry_dsn="not a dsn"), process="worker") is False
        monkeypatch.setenv("EVENTOPS_PROBE_BATCH_SIZE", "0")  # settings that do not validate
        get_settings.cache_clear()
        with pytest.raises(SettingsError):
            get_settings()
        assert init_sentry_from_environment("worker") is False
        celeryd_init.send(sender="celery@test", instance=None, conf=app.conf, options={})
    finally:
        _stop_sentry()
        monkeypatch.undo()
        get_settings.cache_clear()


def _sqlalchemy_wrapping(error: BaseException) -> BaseException:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, error)


@pytest.mark.parametrize(
    ("make_error", "expected"),
    [
        (lambda: psycopg.OperationalError("connection refused"), ("infrastructure", "high")),
        (
            lambda: _sqlalchemy_wrapping(psycopg.OperationalError("server closed")),
            ("infrastructure", "high"),
        ),
        (lambda: redis.exceptions.ConnectionError("refused"), ("infrastructure", "high")),
        (lambda: kombu.exceptions.OperationalError("broker down"), ("infrastructure", "high")),
        (lambda: ConnectionRefusedError(errno.ECONNREFUSED, "refused"), ("infrastructure", "high")),
        (lambda: OSError(errno.ENOSPC, "No space left"), ("infrastructure", "high")),
        (lambda: TimeoutError("timed out"), ("transient", "medium")),
        (lambda: SoftTimeLimitExceeded(), ("transient", "medium")),
        (lambda: redis.exceptions.TimeoutError("slow"), ("transient", "medium")),
        (
            lambda: _sqlalchemy_wrapping(psycopg.errors.QueryCanceled("statement timeout")),
            ("transient", "medium"),
        ),
        (lambda: ConfigError(["checks[0].url: bad"]), ("configuration", "high")),
        (lambda: SettingsError(["EVENTOPS_BROKER_URL: bad"]), ("configuration", "high")),
        (
            lambda: _validation_error(),
            ("configuration", "high"),
        ),
        (lambda: redis.exceptions.AuthenticationError("bad password"), ("configuration", "high")),
        (
            lambda: psycopg.OperationalError('password authentication failed for user "x"'),
            ("configuration", "high"),
        ),
        (lambda: ValueError("bug"), ("permanent", "high")),
        (lambda: KeyError("missing"), ("permanent", "high")),
        (lambda: FileNotFoundError(errno.ENOENT, "gone"), ("permanent", "high")),
        (lambda: _caused_by(RuntimeError("wrapped"), TimeoutError()), ("transient", "medium")),
        (lambda: _declaring(RuntimeError("no key"), "configuration"), ("configuration", "high")),
    ],
)
def test_failure_classes(
    make_error: Callable[[], BaseException], expected: tuple[str, str]
) -> None:
    assert classify(make_error()) == expected


def _validation_error() -> pydantic.ValidationError:
    try:
        Settings(probe_batch_size=0)
    except pydantic.ValidationError as error:
        return error
    raise AssertionError("expected a validation error")


def _caused_by(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


def _declaring(error: BaseException, failure_class: str) -> BaseException:
    error.failure_class = failure_class  # type: ignore[attr-defined]
    return error
