"""Web Vitals: the beacon endpoint under a real uvicorn, p75 per page and device, and breaches
through the rule engine, on real Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from core.insight.vitals import Beacon, p75_by_page, record_vitals, store_beacons
from core.rules import evaluate_rules
from models.db import session_scope
from models.insight import WebVital
from models.tables import Incident, Metric
from tests.conftest import make_config
from tests.insight_helpers import serving
from web.ingest import router
from workers.settings import Settings

TOKEN = "beacon-token-123"
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def beacon(**fields: Any) -> dict[str, Any]:
    """What a web-vitals callback reports, plus the page and device the snippet adds."""
    return {
        "name": "LCP",
        "value": 1840.5,
        "rating": "good",
        "delta": 1840.5,
        "id": "v4-1732700000000-1234567890123",
        "navigationType": "navigate",
        "page": "/vendors",
        "device": "mobile",
    } | fields


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = FastAPI()
    app.state.settings = Settings(ingest_token=TOKEN)
    app.include_router(router)
    with serving(app) as url:
        yield url


def rows() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(WebVital)) or 0)


def post(base_url: str, body: Any, *, token: str | None = TOKEN, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    headers.setdefault("Content-Type", "application/json")
    return httpx.post(f"{base_url}/ingest/vitals", content=content, headers=headers, **kwargs)


def test_one_metric_with_the_bearer_token_is_stored(clean_db: str, base_url: str) -> None:
    response = post(base_url, beacon(page="https://eventpros.co.nz/vendors?region=otago#top"))

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "stored": 1}
    with session_scope() as session:
        [row] = session.scalars(select(WebVital))
    assert (row.name, row.value, row.rating, row.metric_id) == (
        "LCP",
        1840.5,
        "good",
        "v4-1732700000000-1234567890123",
    )
    # The query string and fragment are dropped: ids and personal data stay out.
    assert (row.page, row.device, row.navigation_type) == ("/vendors", "mobile", "navigate")


def test_a_send_beacon_batch_as_text_plain_with_the_query_token_is_stored(
    clean_db: str, base_url: str
) -> None:
    batch = [beacon(name=n, id=f"v4-{n}", value=v) for n, v in [("CLS", 0.02), ("INP", 180)]]

    response = httpx.post(
        f"{base_url}/ingest/vitals",
        params={"token": TOKEN},
        content=json.dumps(batch),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )

    assert response.status_code == 202, response.text
    assert rows() == 2


def test_a_metric_reported_again_keeps_its_newest_value(clean_db: str, base_url: str) -> None:
    post(base_url, beacon(name="CLS", id="v4-cls", value=0.05))
    post(base_url, beacon(name="CLS", id="v4-cls", value=0.18, delta=0.13))

    with session_scope() as session:
        assert session.scalars(select(WebVital.value)).all() == [0.18]


@pytest.mark.parametrize(
    ("token", "headers"),
    [(None, {}), ("wrong", {}), (None, {"Authorization": f"Basic {TOKEN}"})],
    ids=["missing", "wrong", "not-bearer"],
)
def test_without_the_right_token_nothing_is_written(
    clean_db: str, base_url: str, token: str | None, headers: dict[str, str]
) -> None:
    response = post(base_url, beacon(), token=token, headers=headers)

    assert response.status_code == 401
    assert "token" in response.json()["detail"]
    assert rows() == 0


def test_an_oversized_body_is_refused_with_413_and_nothing_written(
    clean_db: str, base_url: str
) -> None:
    padded = [beacon(id=f"v4-{i}", page="/" + "x" * 1000) for i in range(70)]  # > 64 KiB

    response = post(base_url, padded)

    assert response.status_code == 413
    assert "limit is 65536" in response.json()["detail"] or "65536" in response.text
    assert rows() == 0


def test_more_than_100_items_are_refused_and_nothing_written(clean_db: str, base_url: str) -> None:
    response = post(base_url, [beacon(id=f"v4-{i}") for i in range(101)])

    assert response.status_code == 413
    assert response.json()["detail"] == "the batch has 101 items; the limit is 100"
    assert rows() == 0


def test_malformed_json_is_a_400_naming_the_problem(clean_db: str, base_url: str) -> None:
    response = post(base_url, b'{"name": "LCP", "value": ')

    assert response.status_code == 400
    assert response.json()["detail"].startswith("body is not JSON")
    assert rows() == 0


def test_wrong_types_are_a_422_naming_item_and_field_and_the_good_items_wait(
    clean_db: str, base_url: str
) -> None:
    batch = [beacon(id="v4-ok"), beacon(id="v4-bad", value="fast"), beacon(id=7)]

    response = post(base_url, batch)

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(line.startswith("[1].value:") for line in detail), detail
    assert any(line.startswith("[2].id:") for line in detail), detail
    assert rows() == 0  # all or nothing: the good first item is not written either


def test_an_unknown_metric_name_is_a_422(clean_db: str, base_url: str) -> None:
    response = post(base_url, [beacon(id="v4-1"), beacon(id="v4-2", name="SPEED")])

    assert response.status_code == 422
    [line] = response.json()["detail"]
    assert line.startswith("[1].name:") and "LCP" in line
    assert rows() == 0


@pytest.mark.parametrize(
    "body",
    [
        "[]",
        '"LCP"',
        json.dumps(beacon(page="vendors")),
        json.dumps(beacon(value=-1)),
        json.dumps(beacon(value=10_000_000)),
        json.dumps(beacon(page="/vendors\u0000")),
        json.dumps(beacon(id="v4-\u0000")),
    ],
    ids=["empty", "string", "relative-page", "negative", "implausible", "nul-page", "nul-id"],
)
def test_other_malformed_beacons_are_a_422(clean_db: str, base_url: str, body: str) -> None:
    assert post(base_url, body).status_code == 422
    assert rows() == 0


def test_a_form_post_is_refused_as_unsupported_media(clean_db: str, base_url: str) -> None:
    response = post(
        base_url, "name=LCP", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )

    assert response.status_code == 415
    assert rows() == 0


# -- p75 per page and device, and the rules --------------------------------------------------


def store(name: str, page: str, device: str, values: list[float], at: datetime = T0) -> None:
    beacons = [
        Beacon.model_validate(
            {
                "name": name,
                "value": v,
                "id": f"{name}-{page}-{device}-{i}",
                "page": page,
                "device": device,
            }
        )
        for i, v in enumerate(values)
    ]
    with session_scope() as session:
        store_beacons(session, beacons, at)


def test_p75_per_page_and_device_against_the_thresholds(clean_db: str) -> None:
    # percentile_cont(0.75) of 1000..5000 is 4000; of 1000..2200 step 300 it is 1900.
    store("LCP", "/vendors", "mobile", [1000, 2000, 3000, 4000, 5000])
    store("LCP", "/vendors", "desktop", [1000, 1300, 1600, 1900, 2200])
    store("CLS", "/vendors", "mobile", [0.0, 0.05, 0.1, 0.2, 0.3])
    store("INP", "/", "desktop", [100, 150, 200, 250, 300])
    store("LCP", "/", "desktop", [9000], at=T0 - timedelta(hours=2))  # outside the window

    with session_scope() as session:
        found = p75_by_page(session, T0 - timedelta(hours=1), T0)

    assert [(v.page, v.device, v.metric, v.p75, v.threshold, v.ok) for v in found] == [
        ("/", "desktop", "INP", 250.0, 200.0, False),
        ("/vendors", "desktop", "LCP", 1900.0, 2500.0, True),
        ("/vendors", "mobile", "CLS", 0.2, 0.1, False),
        ("/vendors", "mobile", "LCP", 4000.0, 2500.0, False),
    ]


def test_a_slow_page_opens_an_incident_through_the_rule_engine(clean_db: str) -> None:
    store("LCP", "/vendors", "mobile", [1000, 2000, 3000, 4000, 5000])
    store("LCP", "/vendors", "desktop", [1000, 1300, 1600, 1900, 2200])
    config = make_config(
        insight={"vitals": {"min_samples": 5}},
        rules=[
            {
                "name": "lcp-poor",
                "metric": "vitals.lcp.p75",
                "aggregate": "last",
                "window": "15m",
                "op": ">=",
                "threshold": 2500,
                "severity": "warning",
            }
        ],
    )

    with session_scope() as session:
        summary = record_vitals(session, config, T0 + timedelta(minutes=1))
        # A rerun in the same 5-minute slot replaces its samples.
        record_vitals(session, config, T0 + timedelta(minutes=2))
    with session_scope() as session:
        evaluated = evaluate_rules(session, config, now=T0 + timedelta(minutes=3))
        samples = session.execute(select(Metric.subject, Metric.value).order_by(Metric.subject))
        assert [tuple(s) for s in samples] == [
            ("/vendors|desktop", 1900.0),
            ("/vendors|mobile", 4000.0),
        ]
        [incident] = session.scalars(select(Incident))

    assert summary["poor"] == ["LCP /vendors|mobile"]
    assert evaluated["breaching"] == 1
    assert incident.fingerprint == "rule:lcp-poor:/vendors|mobile"
    assert incident.severity == "warning"


def test_too_few_beacons_record_no_p75(clean_db: str) -> None:
    store("LCP", "/rare", "tablet", [9000, 9000])
    config = make_config(insight={"vitals": {"min_samples": 3}})

    with session_scope() as session:
        assert record_vitals(session, config, T0)["series"] == 0


def test_the_demo_beacons_reach_the_endpoint_and_show_the_slow_checkout_on_phones(
    clean_db: str, base_url: str
) -> None:
    from core.clock import utcnow
    from demo.platform_insight import demo_beacons, send_beacons

    beacons = demo_beacons(600)
    assert send_beacons(base_url, TOKEN, beacons) == len(beacons) == 3000

    now = utcnow()
    with session_scope() as session:
        found = p75_by_page(session, now - timedelta(hours=1), now, min_samples=20)
    poor = [(v.page, v.device, v.metric) for v in found if v.ok is False]
    assert poor == [("/checkout", "mobile", "LCP")]


def test_only_the_busiest_series_are_recorded_past_max_series(clean_db: str) -> None:
    store("LCP", "/vendors", "mobile", [1000] * 6)
    store("LCP", "/junk-1", "mobile", [9000] * 5)
    store("LCP", "/junk-2", "mobile", [9000] * 5)
    config = make_config(insight={"vitals": {"min_samples": 5, "max_series": 1}})

    with session_scope() as session:
        summary = record_vitals(session, config, T0)
        subjects = session.scalars(select(Metric.subject)).all()

    assert (summary["series"], summary["dropped"]) == (1, 2)
    assert subjects == ["/vendors|mobile"]


def test_the_dashboard_summary_lists_p75s_with_enough_samples(clean_db: str) -> None:
    from core.insight.summary import dashboard_summary

    store("LCP", "/vendors", "mobile", [1000, 2000, 3000, 4000, 5000])
    store("INP", "/vendors", "mobile", [50, 60])  # too few for the config's min_samples
    config = make_config(insight={"vitals": {"min_samples": 5}})

    with session_scope() as session:
        summary = dashboard_summary(session, config, T0 + timedelta(minutes=1), platform_url=None)

    assert summary["vitals"] == [
        {
            "page": "/vendors",
            "device": "mobile",
            "metric": "LCP",
            "p75": 4000.0,
            "threshold": 2500.0,
            "ok": False,
            "samples": 5,
        }
    ]
    assert (summary["kpis"], summary["activity"]) == ([], {})
