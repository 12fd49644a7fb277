"""Flower's door (workers/flower_server.Guard) with an injected clock: who gets in, who waits,
and for how long."""

from __future__ import annotations

import base64

from workers.flower_server import Guard


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_locked_address_waits_out_the_window_then_gets_in_and_others_never_wait() -> None:
    clock = Clock()
    guard = Guard("admin", "pw", clock=clock)
    for _ in range(5):
        refused = guard.refusal("/metrics", basic("admin", "wrong"), "10.0.0.1")
        assert refused is not None and refused.status == 401
    locked = guard.refusal("/metrics", basic("admin", "pw"), "10.0.0.1")
    assert locked is not None and locked.status == 429
    assert locked.headers["Retry-After"] == "61"  # rounded up: never too early
    assert guard.refusal("/metrics", basic("admin", "pw"), "10.0.0.2") is None
    clock.now += 30
    again = guard.refusal("/tasks", None, "10.0.0.1")
    assert again is not None and again.headers["Retry-After"] == "31"
    clock.now += 30.5
    assert guard.refusal("/metrics", basic("admin", "pw"), "10.0.0.1") is None


def test_no_credentials_is_a_challenge_that_is_not_counted() -> None:
    guard = Guard("admin", "pw", clock=Clock())
    for _ in range(20):
        refused = guard.refusal("/", None, "10.0.0.1")
        assert refused is not None and refused.status == 401
        assert refused.headers == {"WWW-Authenticate": 'Basic realm="flower"'}
    assert guard.refusal("/", basic("admin", "pw"), "10.0.0.1") is None


def test_only_the_health_check_is_open_under_the_url_prefix_too() -> None:
    guard = Guard("admin", "pw", url_prefix="/flower/", clock=Clock())
    assert guard.refusal("/flower/healthcheck", None, "10.0.0.1") is None
    for path in ("/healthcheck/x", "/flower/metrics", "/flower/", "/healthcheck"):
        assert guard.refusal(path, None, "10.0.0.1") is not None, path


def test_the_user_name_and_a_password_with_colons_and_commas_must_match_exactly() -> None:
    guard = Guard("admin", "p:ss,word", clock=Clock())
    assert guard.refusal("/", basic("admin", "p:ss,word"), "10.0.0.1") is None
    for user, password in [("Admin", "p:ss,word"), ("admin", "p:ss"), ("admin", "pa:ss,word")]:
        assert guard.refusal("/", basic(user, password), "10.0.0.2") is not None


def test_the_right_password_from_a_shared_address_does_not_clear_its_failures() -> None:
    """An operator's browser behind the same NAT as a guesser sends the password with every
    request; that must not hand the guesser a fresh five tries each time."""
    guard = Guard("admin", "pw", clock=Clock())
    for _ in range(4):
        assert guard.refusal("/", basic("admin", "guess"), "10.0.0.1") is not None
        assert guard.refusal("/tasks", basic("admin", "pw"), "10.0.0.1") is None
    assert guard.refusal("/", basic("admin", "guess"), "10.0.0.1") is not None
    locked = guard.refusal("/", basic("admin", "guess"), "10.0.0.1")
    assert locked is not None and locked.status == 429
