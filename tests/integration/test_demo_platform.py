"""The demo platform over real loopback HTTP: health answers, fault switches, hook receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from demo.platform import MAX_BODY_BYTES, DemoPlatform

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def platform() -> Iterator[DemoPlatform]:
    with DemoPlatform() as running:
        yield running


@pytest.fixture
def client(platform: DemoPlatform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.url, timeout=5) as http:
        yield http


def test_healthy_service_answers_200_ok(client: httpx.Client) -> None:
    for service in ("stripe", "mapbox", "supabase"):
        response = client.get(f"/api/health/{service}")
        assert response.status_code == 200
        assert response.json() == {"service": service, "status": "ok"}


def test_unknown_service_answers_404_json(client: httpx.Client) -> None:
    response = client.get("/api/health/paypal")
    assert response.status_code == 404
    assert "paypal" in response.json()["error"]


def test_failing_service_answers_503_until_switched_back(client: httpx.Client) -> None:
    assert client.post("/faults/supabase", json={"mode": "fail"}).status_code == 200

    for _ in range(2):
        response = client.get("/api/health/supabase")
        assert response.status_code == 503
        assert response.json() == {
            "service": "supabase",
            "status": "error",
            "message": "database connection refused",
        }
    assert client.get("/api/health/stripe").status_code == 200

    assert client.post("/faults/supabase", json={"mode": "ok"}).status_code == 200
    assert client.get("/api/health/supabase").status_code == 200


def test_constructor_faults_are_in_force_from_the_start() -> None:
    with (
        DemoPlatform(fail=["supabase"], slow=["mapbox"], slow_delay=0.3) as platform,
        httpx.Client(base_url=platform.url, timeout=5) as client,
    ):
        assert client.get("/api/health/supabase").status_code == 503
        started = time.monotonic()
        assert client.get("/api/health/mapbox").status_code == 200
        assert time.monotonic() - started >= 0.3
        assert client.get("/faults").json() == {
            "stripe": {"mode": "ok", "delay": 8.0},
            "mapbox": {"mode": "slow", "delay": 0.3},
            "supabase": {"mode": "fail", "delay": 8.0},
        }


def test_slow_service_answers_200_after_at_least_the_delay(client: httpx.Client) -> None:
    client.post("/faults/mapbox", json={"mode": "slow", "delay": 0.3}).raise_for_status()

    started = time.monotonic()
    response = client.get("/api/health/mapbox")

    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_timeout_service_never_answers_so_the_client_times_out(
    platform: DemoPlatform, client: httpx.Client
) -> None:
    platform.set_fault("stripe", "timeout")

    with pytest.raises(httpx.TimeoutException):
        httpx.get(f"{platform.url}/api/health/stripe", timeout=0.5)

    # The held request must not block other services.
    assert client.get("/api/health/mapbox").status_code == 200


def test_stop_lets_go_of_a_held_request_promptly() -> None:
    platform = DemoPlatform().start()
    platform.set_fault("stripe", "timeout")
    stopper = threading.Timer(0.3, platform.stop)
    stopper.start()
    started = time.monotonic()

    with pytest.raises(httpx.TransportError):
        httpx.get(f"{platform.url}/api/health/stripe", timeout=10)

    assert time.monotonic() - started < 3
    stopper.join()


def test_flapping_service_alternates_fail_and_ok(client: httpx.Client) -> None:
    client.post("/faults/stripe", json={"mode": "flap"}).raise_for_status()

    codes = [client.get("/api/health/stripe").status_code for _ in range(4)]

    assert codes == [503, 200, 503, 200]


def test_get_faults_reports_every_switch(client: httpx.Client) -> None:
    client.post("/faults/mapbox", json={"mode": "slow", "delay": 3}).raise_for_status()
    client.post("/faults/stripe", json={"mode": "flap"}).raise_for_status()

    faults = client.get("/faults").json()

    assert {service: fault["mode"] for service, fault in faults.items()} == {
        "stripe": "flap",
        "mapbox": "slow",
        "supabase": "ok",
    }
    assert faults["mapbox"]["delay"] == 3


def test_fault_form_from_the_index_page_switches_and_redirects(client: httpx.Client) -> None:
    response = client.post("/faults/supabase", data={"mode": "fail", "delay": ""})

    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert client.get("/api/health/supabase").status_code == 503


def test_json_sent_as_curl_d_sends_it_a_form_content_type_still_switches(
    client: httpx.Client,
) -> None:
    # The README's and the banner's `curl -X POST .../faults/supabase -d '{"mode": "ok"}'`:
    # curl labels the body application/x-www-form-urlencoded.
    client.post("/faults/supabase", json={"mode": "fail"}).raise_for_status()
    response = client.post(
        "/faults/supabase",
        content=b'{"mode": "ok"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["mode"] == "ok"
    assert client.get("/api/health/supabase").status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/faults/paypal", {"mode": "fail"}, "paypal"),
        ("/faults/stripe", {"mode": "explode"}, "explode"),
        ("/faults/stripe", {"mode": "slow", "delay": "soon"}, "delay"),
        ("/faults/stripe", {"mode": "slow", "delay": -1}, "delay"),
        ("/faults/stripe", {"delay": 3}, "mode"),
        ("/faults/stripe", ["fail"], "mode"),
    ],
)
def test_bad_fault_request_answers_400_naming_the_problem(
    client: httpx.Client, path: str, body: object, named: str
) -> None:
    response = client.post(path, json=body)

    assert response.status_code == 400
    assert named in response.json()["error"]
    assert client.get("/faults").json()["stripe"]["mode"] == "ok"


def test_malformed_json_fault_request_answers_400(client: httpx.Client) -> None:
    response = client.post("/faults/stripe", content=b"{not json")

    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


def test_set_fault_rejects_bad_input_with_value_error(platform: DemoPlatform) -> None:
    with pytest.raises(ValueError, match="paypal"):
        platform.set_fault("paypal", "fail")
    with pytest.raises(ValueError, match="explode"):
        platform.set_fault("stripe", "explode")


def test_posted_notification_is_listed_in_hooks_json_newest_first(
    platform: DemoPlatform, client: httpx.Client
) -> None:
    first = {"version": "1.0", "title": "first", "message": "one", "type": "info"}
    second = {"version": "1.0", "title": "second", "message": "two", "type": "failure"}
    assert client.post("/hooks/notify", json=first).status_code == 200
    assert client.post("/hooks/notify", json=second).status_code == 200

    listed = client.get("/hooks.json").json()

    assert [item["title"] for item in listed] == ["second", "first"]
    assert listed[0]["message"] == "two"
    assert listed[0]["received_at"]
    assert [item["title"] for item in platform.notifications] == ["first", "second"]


def test_hooks_page_shows_notifications_html_escaped(client: httpx.Client) -> None:
    title = "<script>alert('x')</script> supabase down"
    client.post("/hooks/notify", json={"title": title, "message": "a & b", "type": "failure"})

    page = client.get("/hooks")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; supabase down" in page.text
    assert "a &amp; b" in page.text


def test_non_json_notification_body_is_kept_as_text(client: httpx.Client) -> None:
    client.post("/hooks/notify", content=b"plain words").raise_for_status()

    assert client.get("/hooks.json").json()[0]["body"] == "plain words"


def test_hooks_file_gets_one_json_line_per_notification(tmp_path: Path) -> None:
    hooks_file = tmp_path / "var" / "notifications.jsonl"
    with (
        DemoPlatform(hooks_file=hooks_file) as platform,
        httpx.Client(base_url=platform.url, timeout=5) as client,
    ):
        client.post("/hooks/notify", json={"title": "t1", "message": "m1"}).raise_for_status()
        client.post("/hooks/notify", json={"title": "t2", "message": "m2"}).raise_for_status()
        # Flushed per line: readable while the server still runs.
        lines = hooks_file.read_text(encoding="utf-8").splitlines()

    records = [json.loads(line) for line in lines]
    assert [(r["title"], r["message"]) for r in records] == [("t1", "m1"), ("t2", "m2")]
    assert all(r["received_at"] for r in records)


def test_oversized_body_answers_413_and_is_not_stored(
    platform: DemoPlatform, client: httpx.Client
) -> None:
    response = client.post("/hooks/notify", content=b"x" * (MAX_BODY_BYTES + 1))

    assert response.status_code == 413
    assert platform.notifications == []


def test_index_page_links_health_faults_and_hooks(client: httpx.Client) -> None:
    page = client.get("/")

    assert page.status_code == 200
    for link in ("/api/health/stripe", "/api/health/mapbox", "/api/health/supabase"):
        assert f'href="{link}"' in page.text
    assert 'action="/faults/supabase"' in page.text
    assert 'href="/hooks"' in page.text


def test_main_serves_until_sigterm_and_exits_0(tmp_path: Path) -> None:
    hooks_file = tmp_path / "notifications.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "demo.platform",
            "--port",
            "0",
            "--fail",
            "supabase",
            "--hooks-file",
            str(hooks_file),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), line
        assert not url.endswith(":0")

        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.get("/api/health/supabase").status_code == 503
            assert client.get("/api/health/stripe").status_code == 200
            client.post("/hooks/notify", json={"title": "from main"}).raise_for_status()

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
        assert json.loads(hooks_file.read_text().splitlines()[0])["title"] == "from main"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
