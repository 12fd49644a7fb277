"""What the dashboard believes about where a request comes from (issue 15, item 9), on real
`eventops dashboard` processes: the Origin check never trusts the Host header, and
X-Forwarded-For counts only from the proxies EVENTOPS_TRUSTED_PROXIES names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import select

from core.incidents import Problem, raise_problem
from models.db import session_scope
from models.tables import Incident
from tests.conftest import make_config
from tests.dashboard_server import Dashboard, running_dashboard

PUBLIC_URL = "https://ops.example.test"
# The proxy: connections from this loopback address are the proxy's, any other are not.
PROXY = "127.0.0.42"


def open_incident(name: str = "stripe") -> int:
    with session_scope() as session:
        incident_id = raise_problem(
            session,
            Problem(
                fingerprint=f"test:{name}", title=f"{name} is down", severity="warning", summary="x"
            ),
            make_config(),
        )
    assert incident_id is not None
    return incident_id


def incident_status(incident_id: int) -> str:
    with session_scope() as session:
        return str(session.scalar(select(Incident.status).where(Incident.id == incident_id)))


def wrong_logins(server: Dashboard, source: str, forwarded_for: list[str]) -> list[int]:
    """One wrong login per X-Forwarded-For value, from `source`; the statuses."""
    with server.client(source=source) as client:
        return [
            client.post(
                "/login",
                data={"username": "intruder", "password": "guess"},
                headers={"X-Forwarded-For": value},
            ).status_code
            for value in forwarded_for
        ]


ROTATING = [f"203.0.113.{n}" for n in range(1, 8)]


@pytest.fixture(scope="module")
def proxied(
    database_url: str, broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dashboard]:
    """A dashboard published at PUBLIC_URL behind a proxy at PROXY."""
    with running_dashboard(
        database_url,
        broker_url,
        tmp_path_factory.mktemp("proxied"),
        EVENTOPS_DASHBOARD_PUBLIC_URL=PUBLIC_URL,
        EVENTOPS_TRUSTED_PROXIES=f"{PROXY}/32",
    ) as server:
        yield server


def test_a_page_whose_host_and_origin_both_say_another_site_cannot_acknowledge(
    dashboard: Dashboard, clean_db: str
) -> None:
    # DNS rebinding, or any client: Host is what the client writes, so it proves nothing.
    incident_id = open_incident()
    client, token = dashboard.login()
    with closing(client):
        path = f"/api/incidents/{incident_id}/acknowledge"
        for origin, host in [
            ("http://evil.example", "evil.example"),
            (f"http://evil.example:{dashboard.url.rsplit(':', 1)[1]}", None),
            ("null", None),
        ]:
            headers = {"X-CSRF-Token": token, "Origin": origin}
            if host:
                headers["Host"] = host
            refused = client.post(path, headers=headers)
            assert refused.status_code == 403, (origin, refused.text)
        assert incident_status(incident_id) == "open"
        # A foreign Referer (no Origin) is refused the same way.
        referred = client.post(
            path, headers={"X-CSRF-Token": token, "Referer": "http://evil.example/page"}
        )
        assert referred.status_code == 403
        assert incident_status(incident_id) == "open"


def test_without_a_public_url_any_loopback_name_of_the_listening_port_is_this_site(
    dashboard: Dashboard, clean_db: str
) -> None:
    port = dashboard.url.rsplit(":", 1)[1]
    client, token = dashboard.login()
    with closing(client):
        for n, origin in enumerate((f"http://localhost:{port}", f"http://[::1]:{port}")):
            incident_id = open_incident(f"check{n}")
            done = client.post(
                f"/api/incidents/{incident_id}/acknowledge",
                headers={"X-CSRF-Token": token, "Origin": origin},
            )
            assert done.status_code == 200, (origin, done.text)
            assert incident_status(incident_id) == "acknowledged"
        # Another port of this host is another site.
        incident_id = open_incident("other")
        other_port = client.post(
            f"/api/incidents/{incident_id}/acknowledge",
            headers={"X-CSRF-Token": token, "Origin": "http://127.0.0.1:1"},
        )
        assert other_port.status_code == 403


def test_x_forwarded_for_from_127_0_0_1_is_not_believed_so_rotating_it_never_resets_the_limit(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    # A dashboard of its own: this locks 127.0.0.1 out, where the other tests log in from.
    with running_dashboard(database_url, broker_url, tmp_path) as server:
        statuses = wrong_logins(server, "127.0.0.1", ROTATING)
    # Five failures from the one real address, then the limit, whatever the header said.
    assert statuses == [401] * 5 + [429] * 2


def test_x_forwarded_for_is_believed_from_a_configured_proxy_only(proxied: Dashboard) -> None:
    # Through the proxy, each forwarded client is its own address: none is limited.
    assert wrong_logins(proxied, PROXY, ROTATING) == [401] * len(ROTATING)
    # Straight from another address, the header is the client's word and counts for nothing.
    assert wrong_logins(proxied, "127.0.0.43", ROTATING) == [401] * 5 + [429] * 2


def test_with_a_public_url_only_its_origin_may_change_state_and_cookies_are_secure(
    proxied: Dashboard, clean_db: str
) -> None:
    with proxied.client() as client:
        login = client.post(
            "/login",
            data={"username": proxied.user, "password": proxied.password},
            headers={"Origin": PUBLIC_URL},
        )
        assert login.status_code == 303, login.text
        # TLS ends at the proxy; the published URL is https, so the cookie is Secure.
        assert "secure" in login.headers["set-cookie"].lower()
        # The address it listens on is not the published site once one is configured.
        direct = client.post(
            "/login",
            data={"username": proxied.user, "password": proxied.password},
            headers={"Origin": proxied.url},
        )
        assert direct.status_code == 403
        spoofed = client.post(
            "/login",
            data={"username": proxied.user, "password": proxied.password},
            headers={"Origin": "https://evil.example", "Host": "evil.example"},
        )
        assert spoofed.status_code == 403


def test_a_loopback_public_url_accepts_every_loopback_name_of_its_port(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    # Compose publishes the dashboard as http://localhost:8600 while it listens on the
    # container's own address; http://127.0.0.1:8600 on that host is the same page.
    with running_dashboard(
        database_url, broker_url, tmp_path, EVENTOPS_DASHBOARD_PUBLIC_URL="http://localhost:8600"
    ) as server:
        credentials = {"username": server.user, "password": server.password}
        with server.client() as client:
            for origin, status in [
                ("http://localhost:8600", 303),
                ("http://127.0.0.1:8600", 303),
                ("http://[::1]:8600", 303),
                ("http://127.0.0.1:8601", 403),
                ("https://localhost:8600", 403),
                ("http://evil.example:8600", 403),
            ]:
                login = client.post("/login", data=credentials, headers={"Origin": origin})
                assert login.status_code == status, (origin, login.text)
