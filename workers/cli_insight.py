"""`eventops insight ...`: KPIs, Web Vitals, funnels, adoption, feedback and A/B tests.

Each command shows what the beat-scheduled tasks stored; `--now` computes it first, here,
from the platform database (EVENTOPS_PLATFORM_DATABASE_URL).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import click

from models.config import ConfigError
from workers.cli_output import checked_config, config_errors_exit_2, print_json


def _platform_url() -> str:
    from workers.settings import get_settings

    url = get_settings().platform_database_url
    if url is None:
        raise ConfigError(["EVENTOPS_PLATFORM_DATABASE_URL: is not set (needed by --now)"])
    return url.get_secret_value()


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return {True: "ok", False: "BELOW", None: "-"}[ok]


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@click.group()
def insight() -> None:
    """Business KPIs, Web Vitals, funnels, adoption, feedback and A/B tests (docs/insight.md)."""


@insight.command("kpis")
@click.option("--now", "compute", is_flag=True, help="Compute them now from the platform DB.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def kpis_command(compute: bool, as_json: bool) -> None:
    """Each KPI's newest value against its target (on pace, for prorated counts)."""
    from core.clock import utcnow
    from core.insight.jobs import run_kpis
    from core.insight.kpis import latest_kpis
    from models.db import session_scope

    config = checked_config()
    if compute:
        summary = run_kpis(config, _platform_url(), utcnow())
        for name, reason in summary["failed"].items():
            click.echo(f"eventops: {name}: {reason}", err=True)
    with session_scope() as session:
        readings = latest_kpis(session, [k.name for k in config.insight.kpis])
    if as_json:
        print_json([r.as_dict() for r in readings])
        return
    if not readings:
        click.echo("No KPI values yet: the insight.kpis task runs hourly (or use --now).")
        return
    _table(
        ("kpi", "value", "target", "on pace for", "period", "since", "verdict"),
        [
            (
                r.name,
                _number(r.value),
                _number(r.target),
                _number(r.expected, 1),
                r.period,
                f"{r.period_start:%Y-%m-%d}",
                _verdict(r.ok),
            )
            for r in readings
        ],
    )


@insight.command("vitals")
@click.option("--window", default=None, help="Rolling window, e.g. 1h, 24h (default: config).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def vitals_command(window: str | None, as_json: bool) -> None:
    """Web Vitals p75 per page and device against the thresholds."""
    from core.clock import utcnow
    from core.insight.vitals import p75_by_page
    from models.config import parse_duration
    from models.db import session_scope

    config = checked_config().insight.vitals
    try:
        span: timedelta = parse_duration(window) if window else config.window
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--window") from None
    now = utcnow()
    with session_scope() as session:
        found = p75_by_page(session, now - span, now, dict(config.thresholds), 1)
    if as_json:
        print_json([v.as_dict() for v in found])
        return
    if not found:
        click.echo("No Web Vitals beacons in the window.")
        return
    _table(
        ("page", "device", "metric", "p75", "threshold", "samples", "verdict"),
        [
            (
                v.page,
                v.device,
                v.metric,
                _number(v.p75),
                _number(v.threshold),
                str(v.samples),
                {True: "good", False: "POOR", None: "-"}[v.ok]
                + ("" if v.samples >= config.min_samples else " (few samples)"),
            )
            for v in found
        ],
    )


@insight.command("funnel")
@click.argument("name")
@click.option("--now", "compute", is_flag=True, help="Compute it now from the platform DB.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def funnel_command(name: str, compute: bool, as_json: bool) -> None:
    """A funnel's steps: users, conversion from step 1 and from the previous step, drop-off."""
    from core.backups.tools import Conn
    from core.clock import utcnow
    from core.insight import funnels, platform
    from core.insight.kpis import hour_floor
    from models.db import session_scope

    config = checked_config()
    funnel = next((f for f in config.insight.funnels if f.name == name), None)
    if funnel is None:
        known = ", ".join(f.name for f in config.insight.funnels) or "none configured"
        raise click.BadParameter(f"unknown funnel {name!r} ({known})", param_hint="NAME")
    if compute:
        now = utcnow()
        with platform.connect(Conn.from_url(_platform_url())) as db:
            steps = funnels.compute_funnel(db, funnel, hour_floor(now))
        with session_scope() as session:
            funnels.store_funnel(session, funnel, hour_floor(now), steps, now)
    with session_scope() as session:
        steps = funnels.latest_funnel(session, name)
    if as_json:
        print_json([s.as_dict() for s in steps])
        return
    if not steps:
        click.echo(f"No results for {name} yet: insight.analytics runs daily (or use --now).")
        return

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    _table(
        ("step", "event", "users", "of step 1", "of previous", "drop-off"),
        [
            (
                str(s.step),
                s.event,
                str(s.users),
                pct(s.conversion),
                pct(s.step_conversion),
                str(s.drop_off),
            )
            for s in steps
        ],
    )


@insight.command("experiment")
@click.argument("name")
@click.option("--now", "compute", is_flag=True, help="Compute it now from the platform DB.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def experiment_command(name: str, compute: bool, as_json: bool) -> None:
    """An A/B test: conversion per variant, p-value against control, sample ratio check."""
    from core.clock import utcnow
    from core.insight.experiments import latest_results
    from core.insight.jobs import run_experiments
    from models.db import session_scope

    config = checked_config()
    experiment = next((e for e in config.insight.experiments if e.name == name), None)
    if experiment is None:
        known = ", ".join(e.name for e in config.insight.experiments) or "none configured"
        raise click.BadParameter(f"unknown experiment {name!r} ({known})", param_hint="NAME")
    if compute:
        run_experiments(config, _platform_url(), utcnow(), [name])
    with session_scope() as session:
        results = latest_results(session, name)
        data: list[dict[str, Any]] = [
            {
                "variant": r.variant,
                "users": r.users,
                "conversions": r.conversions,
                "rate": r.rate,
                "expected_share": r.expected_share,
                "z": r.z,
                "p_value": r.p_value,
                "significant": r.significant,
                "srm_p_value": r.srm_p_value,
                "computed_for": r.computed_for,
            }
            for r in results
        ]
    if as_json:
        print_json(data)
        return
    if not data:
        click.echo(f"No results for {name} yet: insight.experiments runs hourly (or --now).")
        return
    total = sum(d["users"] for d in data) or 1
    _table(
        ("variant", "users", "share", "configured", "conversions", "rate", "p vs control"),
        [
            (
                d["variant"],
                str(d["users"]),
                f"{100 * d['users'] / total:.1f}%",
                f"{100 * d['expected_share']:g}%",
                str(d["conversions"]),
                "-" if d["rate"] is None else f"{100 * d['rate']:.2f}%",
                "-"
                if d["p_value"] is None
                else f"{d['p_value']:.3g}" + (" significant" if d["significant"] else ""),
            )
            for d in data
        ],
    )
    srm_p = data[0]["srm_p_value"]
    if srm_p is None:
        click.echo(f"sample ratio: too few users for a verdict (< {experiment.min_users})")
    elif srm_p < experiment.srm_p:
        click.echo(
            f"SAMPLE RATIO MISMATCH: p = {srm_p:.2g} < {experiment.srm_p:g}; "
            "do not trust these results until the assignment is fixed"
        )
    else:
        click.echo(f"sample ratio: ok (p = {srm_p:.2g})")


@insight.command("feedback")
@click.option("--now", "compute", is_flag=True, help="Compute it now from the platform DB.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def feedback_command(compute: bool, as_json: bool) -> None:
    """NPS, average rating and recurring themes of recent feedback."""
    from core.backups.tools import Conn
    from core.clock import utcnow
    from core.insight import feedback, platform
    from core.insight.kpis import hour_floor
    from models.db import session_scope

    config = checked_config().insight.feedback
    if compute:
        now = utcnow()
        with platform.connect(Conn.from_url(_platform_url())) as db:
            figures = feedback.compute_feedback(db, config, hour_floor(now))
        with session_scope() as session:
            feedback.store_feedback(session, config, hour_floor(now), figures, now)
    with session_scope() as session:
        summary = feedback.latest_feedback(session)
        data: dict[str, Any] | None = None
        if summary is not None:
            data = {
                "period_start": summary.period_start,
                "period_end": summary.period_end,
                "nps": summary.nps,
                "nps_responses": summary.nps_responses,
                "promoters": summary.promoters,
                "passives": summary.passives,
                "detractors": summary.detractors,
                "average_rating": summary.average_rating,
                "ratings": summary.ratings,
                "themes": summary.themes,
            }
    if as_json:
        print_json(data)
        return
    if data is None:
        click.echo("No feedback summary yet: insight.analytics runs daily (or use --now).")
        return
    click.echo(
        f"NPS {_number(data['nps'], 1)} from {data['nps_responses']} answers "
        f"({data['promoters']} promoters, {data['passives']} passives, "
        f"{data['detractors']} detractors); average rating {_number(data['average_rating'], 2)} "
        f"from {data['ratings']} ratings"
    )
    for theme, entry in sorted(data["themes"].items(), key=lambda t: -t[1]["comments"]):
        mark = "recurring" if entry["recurring"] else ""
        click.echo(f"  {theme:<16} {entry['comments']:>5} comments  {mark}".rstrip())


@insight.command("adoption")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@config_errors_exit_2
def adoption_command(as_json: bool) -> None:
    """Share of active users who used each configured feature, computed now."""
    from core.backups.tools import Conn
    from core.clock import utcnow
    from core.insight import adoption, platform
    from core.insight.kpis import hour_floor

    config = checked_config().insight.features
    now = utcnow()
    with platform.connect(Conn.from_url(_platform_url())) as db:
        found = [adoption.compute_adoption(db, f, hour_floor(now)) for f in config]
    if as_json:
        print_json([a.as_dict() for a in found])
        return
    _table(
        ("feature", "users", "active users", "share", "target"),
        [
            (
                a.feature,
                str(a.users),
                str(a.active_users),
                "-" if a.share is None else f"{100 * a.share:.1f}%",
                "-" if a.target is None else f"{100 * a.target:g}%",
            )
            for a in found
        ],
    )
