"""Hysteresis: N failures in a row open an incident, M successes in a row resolve it."""

from __future__ import annotations

from core.pipeline import CheckState, advance

FRESH = CheckState("unknown", 0, 0)


def run(outcomes: str, alert: int = 2, recover: int = 2) -> list[str | None]:
    """Feed a string of outcomes ('.' pass, 'x' fail) and collect the events."""
    state, incident_open, events = FRESH, False, []
    for mark in outcomes:
        step = advance(
            state,
            mark == ".",
            alert_threshold=alert,
            recovery_threshold=recover,
            incident_open=incident_open,
        )
        state = step.state
        events.append(step.event)
        if step.event == "open":
            incident_open = True
        if step.event == "resolve":
            incident_open = False
    return events


def test_failures_below_the_threshold_open_nothing() -> None:
    assert run("x.x.x.", alert=2) == [None] * 6


def test_the_threshold_th_consecutive_failure_opens_once() -> None:
    assert run("xxxx", alert=2) == [None, "open", None, None]


def test_threshold_one_opens_on_the_first_failure() -> None:
    assert run("x", alert=1) == ["open"]


def test_recovery_needs_consecutive_successes() -> None:
    assert run("xx.x..", alert=2, recover=2) == [None, "open", None, None, None, "resolve"]


def test_a_failing_check_below_threshold_reports_failing_not_down() -> None:
    step = advance(FRESH, False, alert_threshold=3, recovery_threshold=2, incident_open=False)
    assert step.state == CheckState("failing", 1, 0)


def test_a_check_with_an_open_incident_stays_down_until_recovered() -> None:
    down = CheckState("down", 5, 0)
    step = advance(down, True, alert_threshold=1, recovery_threshold=2, incident_open=True)
    assert step.state.status == "down" and step.event is None
    step = advance(step.state, True, alert_threshold=1, recovery_threshold=2, incident_open=True)
    assert step.state.status == "up" and step.event == "resolve"
