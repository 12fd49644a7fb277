"""The weekly performance report from generated data whose figures the test knows: real
outcomes, incidents, KPIs, Web Vitals and capacity samples in Postgres, real PNG charts."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
from sqlalchemy import insert, select

from core.capacity import record_samples
from core.reports.data import _services_from_raw, collect
from core.reports.registry import asset_path, get_report, list_reports
from core.reports.weekly import build_weekly_report, week_bounds
from core.schedule import sync_checks
from models.db import session_scope
from models.insight import KpiValue, WebVital
from models.tables import Check, Incident, Outcome
from tests.conftest import make_config

# The week of Monday 16 to Sunday 22 November 2026 (ISO week 47), reported on the Wednesday after.
SINCE = datetime(2026, 11, 16, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=7)
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n"


def api_latency(i: int) -> float:
    """One slow probe in ten at 1500 ms, one in forty at 4000 ms, the rest 200 ms."""
    if i % 40 == 3:
        return 4000.0
    if i % 10 == 5:
        return 1500.0
    return 200.0


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def config() -> Any:
    return make_config(
        checks=[
            {"name": "api", "url": "{platform_url}/h", "interval": "10m", "timeout": "5s"},
            {
                "name": "stripe",
                "url": "{platform_url}/s",
                "interval": "30m",
                "timeout": "5s",
                "group": "payments",
            },
        ],
        capacity={"limits": [{"metric": "database_bytes", "limit": 8e9}]},
    )


def seed(cfg: Any) -> dict[str, Any]:
    """A week of outcomes, incidents, KPIs, vitals and capacity; returns the known answers."""
    api_up: list[float] = []
    with session_scope() as session:
        sync_checks(session, cfg, NOW)
        ids = {name: id_ for name, id_ in session.execute(select(Check.name, Check.id))}
        rows = []
        for i in range(7 * 24 * 6):  # every 10 minutes, off the hour edges
            slot = SINCE + timedelta(minutes=5 + 10 * i)
            down = i % 100 == 7
            latency = None if down else api_latency(i)
            if latency is not None:
                api_up.append(latency)
            rows.append(
                {
                    "check_id": ids["api"],
                    "slot": slot,
                    "observed_at": slot,
                    "status": "down" if down else "up",
                    "latency_ms": latency,
                    "reason": "timeout" if down else None,
                }
            )
        for i in range(7 * 48):
            slot = SINCE + timedelta(minutes=15 + 30 * i)
            rows.append(
                {
                    "check_id": ids["stripe"],
                    "slot": slot,
                    "observed_at": slot,
                    "status": "up",
                    "latency_ms": 300.0,
                }
            )
        # Outside the week: must not count.
        for slot in (SINCE - timedelta(minutes=5), UNTIL + timedelta(minutes=5)):
            rows.append(
                {
                    "check_id": ids["api"],
                    "slot": slot,
                    "observed_at": slot,
                    "status": "down",
                    "latency_ms": 99_999.0,
                }
            )
        session.execute(insert(Outcome), rows)
        for opened, minutes, severity in (
            (SINCE + timedelta(days=1, hours=3), 30, "critical"),
            (SINCE + timedelta(days=3, hours=10), 90, "warning"),
            (SINCE - timedelta(days=2), 10, "critical"),  # the week before
        ):
            session.add(
                Incident(
                    fingerprint=f"test:{opened.isoformat()}",
                    title=f"{severity} thing",
                    severity=severity,
                    category="availability",
                    labels={},
                    status="resolved",
                    opened_at=opened,
                    resolved_at=opened + timedelta(minutes=minutes),
                    flapping=False,
                    reopen_count=0,
                )
            )
        for name, value, target, ok in (
            ("userRegistration", 40.0, 50.0, False),
            ("successfulBookings", 61.0, 50.0, True),
        ):
            session.add(
                KpiValue(
                    kpi=name,
                    period="month",
                    period_start=datetime(2026, 11, 1, tzinfo=UTC),
                    period_end=datetime(2026, 12, 1, tzinfo=UTC),
                    bucket=NOW.replace(minute=0),
                    value=value,
                    target=target,
                    direction="higher",
                    expected=target,
                    ok=ok,
                    computed_at=NOW,
                )
            )
        lcp = [1000.0 + 100 * n for n in range(21)]  # 1.0 s to 3.0 s
        for n, value in enumerate(lcp):
            session.add(
                WebVital(
                    received_at=SINCE + timedelta(hours=n + 1),
                    name="LCP",
                    value=value,
                    metric_id=f"v1-{n}",
                    page="/",
                    device="mobile",
                )
            )
        # 30 days of database size growing 50 MB a day to 7 GB: the 8 GB limit is 20 days on.
        for day in range(30):
            at = UNTIL - timedelta(days=29 - day, hours=1)
            record_samples(session, [("database_bytes", "platform", 5.55e9 + 50e6 * day)], at)
    return {"api_up": api_up, "api_downs": 11, "api_probes": 1008, "stripe_probes": 336}


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources += [value or "" for name, value in attrs if name == "src"]


def test_week_bounds_are_the_last_complete_iso_week_in_utc() -> None:
    assert week_bounds(NOW) == (SINCE, UNTIL)
    assert week_bounds(NOW, week_start=datetime(2026, 11, 18, 13, tzinfo=UTC)) == (SINCE, UNTIL)


def test_the_weekly_figures_are_the_known_answers(clean_db: str) -> None:
    cfg = config()
    known = seed(cfg)
    with session_scope() as session:
        data = collect(session, cfg, SINCE, UNTIL)
        raw = {
            s.name: s
            for s in _services_from_raw(
                session, list(session.scalars(select(Check).order_by(Check.name))), SINCE, UNTIL
            )
        }
    api, stripe = data.services
    assert (api.name, api.probes, stripe.probes) == ("api", 1008, 336)
    assert api.uptime == pytest.approx((1008 - 11) / 1008)
    assert api.error_rate == pytest.approx(11 / 1008)
    assert stripe.uptime == 1.0
    # Percentiles come from the rollups' histogram: within 5% of the exact nearest rank.
    for q, got in ((0.5, api.p50_ms), (0.95, api.p95_ms), (0.99, api.p99_ms)):
        assert got == pytest.approx(nearest_rank(known["api_up"], q), rel=0.05)
    assert (nearest_rank(known["api_up"], 0.5), nearest_rank(known["api_up"], 0.99)) == (
        200.0,
        4000.0,
    )
    assert stripe.p95_ms == pytest.approx(300)
    # The raw-outcome fallback agrees (exactly, it interpolates percentiles).
    assert (raw["api"].probes, raw["api"].p50_ms, raw["stripe"].p99_ms) == (1008, 200.0, 300.0)
    assert len(api.hourly) == 7 * 24
    assert [i.severity for i in data.incidents] == ["critical", "warning"]
    assert data.vitals is not None and data.vitals[0].p75 == pytest.approx(2500.0)
    assert data.kpis is not None and {k.name for k in data.kpis} == {
        "userRegistration",
        "successfulBookings",
    }
    (database,) = [f for f in data.forecasts if f.metric == "database_bytes"]
    assert (database.model, database.days_to_limit) == ("linear", pytest.approx(20.0))


def test_the_report_renders_html_and_markdown_with_real_charts(
    clean_db: str, tmp_path: Path
) -> None:
    cfg = config()
    seed(cfg)
    with session_scope() as session:
        report = build_weekly_report(session, cfg, tmp_path / "reports", NOW)
    assert report.name == "weekly-2026-W47"
    html = report.html_path.read_text()
    parser = _Images()
    parser.feed(html)
    assert sorted(parser.sources) == sorted(
        f"{name}.png"
        for name in (
            "response_times",
            "uptime",
            "error_rates",
            "incidents",
            "vitals",
            "kpis",
            "capacity",
        )
    )
    for source in parser.sources:
        image = report.html_path.parent / source
        data = image.read_bytes()
        assert data.startswith(PNG), source
        assert len(data) > 8_000, source
        pixels = matplotlib.image.imread(image)
        assert pixels.std() > 0.05, f"{source} is one flat colour"
    markdown = report.md_path.read_text()
    for source in parser.sources:
        assert f"]({source})" in markdown
    # The summary figures, in the HTML and in meta.json.
    meta = json.loads((report.html_path.parent / "meta.json").read_text())
    assert meta["summary"]["uptime"] == pytest.approx((997 + 336) / (1008 + 336))
    assert meta["summary"]["incidents_by_severity"] == {"critical": 1, "warning": 1, "info": 0}
    assert meta["summary"]["mttr_minutes"] == pytest.approx(60)
    assert meta["summary"]["capacity_limits_within_30_days"] == ["database_bytes"]
    assert "99.182%" in html  # api uptime, 997/1008
    assert "userRegistration" in html and "LCP" in html
    assert "linear and Holt fit equally well" in html
    assert "queue lag &gt; 60 s" in html
    # The registry lists it for the CLI and the dashboard.
    (listed,) = list_reports(tmp_path, tmp_path / "reports")
    assert (listed.name, listed.kind, listed.html_path) == (
        "weekly-2026-W47",
        "weekly",
        report.html_path,
    )
    assert listed.period_start == SINCE
    assert get_report(tmp_path, "weekly-2026-W47", tmp_path / "reports") == listed
    assert get_report(tmp_path, "../etc", tmp_path / "reports") is None
    # What a web server may send: the report's own files, nothing around them.
    folder = report.html_path.parent
    assert asset_path(tmp_path, report.name, "uptime.png", tmp_path / "reports") == (
        folder / "uptime.png"
    )
    for name, filename in (
        (report.name, "../../secret.png"),
        (report.name, ".staging"),
        (report.name, "missing.png"),
        ("..", "reports"),
        (report.name, "notes.txt"),
    ):
        assert asset_path(tmp_path, name, filename, tmp_path / "reports") is None


def test_a_week_without_data_still_renders_and_says_no_data(clean_db: str, tmp_path: Path) -> None:
    with session_scope() as session:
        report = build_weekly_report(session, make_config(), tmp_path, NOW)
    html = report.html_path.read_text()
    assert "<img" not in html
    assert html.count("No data") >= 3
    assert "No incident this week." in html
    # Building the same week again replaces it, and only `reports.keep` reports are kept.
    with session_scope() as session:
        build_weekly_report(session, make_config(), tmp_path, NOW)
        for weeks in range(1, 4):
            build_weekly_report(
                session, make_config(reports={"keep": 2}), tmp_path, NOW - timedelta(weeks=weeks)
            )
    # Retention keeps the newest weeks, not the most recently written.
    assert [r.name for r in list_reports(tmp_path.parent, tmp_path)] == [
        "weekly-2026-W47",
        "weekly-2026-W46",
    ]
