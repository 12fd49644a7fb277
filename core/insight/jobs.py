"""The insight jobs the tasks and the CLI run: read the platform database first, then write
eventops' tables in one short transaction (no transaction stays open across the platform
queries)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from core.backups.tools import Conn
from core.insight import adoption, experiments, feedback, funnels, kpis, platform, vitals
from core.metrics import record_metrics
from models.config import EventopsConfig
from models.db import session_scope

log = logging.getLogger(__name__)


def run_kpis(
    config: EventopsConfig, platform_url: str, now: datetime, names: list[str] | None = None
) -> dict[str, Any]:
    """KPIs for their current periods, and hourly counters for the hours still missing."""
    with session_scope() as session:
        missing = kpis.missing_counter_hours(session, config, now)
    with platform.connect(Conn.from_url(platform_url)) as db:
        measured, failed = kpis.measure_kpis(config, db, now, names)
        samples, counters_failed = kpis.measure_counters(config, db, missing)
    with session_scope() as session:
        kpis.store_kpis(session, measured)
        record_metrics(session, samples)
    failures = {**failed, **counters_failed}
    for name, reason in failures.items():
        # A KPI whose query broke (a renamed column) must not go unnoticed in a summary.
        log.warning("insight: %s could not be computed: %s", name, reason)
    return {
        "bucket": kpis.hour_floor(now).isoformat(),
        "kpis": {r["kpi"]: {"value": r["value"], "ok": r["ok"]} for r in measured},
        "counter_samples": len(samples),
        "failed": failures,
    }


def run_vitals(config: EventopsConfig, now: datetime) -> dict[str, Any]:
    with session_scope() as session:
        return vitals.record_vitals(session, config, now)


def run_analytics(config: EventopsConfig, platform_url: str, now: datetime) -> dict[str, Any]:
    """Funnels, feature adoption and feedback over their lookbacks ending at this hour."""
    end = kpis.hour_floor(now)
    insight = config.insight
    with platform.connect(Conn.from_url(platform_url)) as db:
        funnel_results = {f.name: funnels.compute_funnel(db, f, end) for f in insight.funnels}
        adoption_results = {f.name: adoption.compute_adoption(db, f, end) for f in insight.features}
        figures = feedback.compute_feedback(db, insight.feedback, end)
    with session_scope() as session:
        for funnel in insight.funnels:
            funnels.store_funnel(session, funnel, end, funnel_results[funnel.name], now)
        for feature in insight.features:
            adoption.store_adoption(session, feature, end, adoption_results[feature.name], now)
        feedback.store_feedback(session, insight.feedback, end, figures, now)
        # The headline figures as metrics too, so a rule can alert on a conversion drop.
        for name, steps in funnel_results.items():
            if steps and steps[-1].conversion is not None:
                kpis.replace_metric(
                    session, f"funnel.{name}.conversion", "platform", steps[-1].conversion, end
                )
        for name, found in adoption_results.items():
            if found.share is not None:
                kpis.replace_metric(
                    session, f"feature.{name}.adoption", "platform", found.share, end
                )
        if figures.nps is not None:
            kpis.replace_metric(session, "feedback.nps", "platform", figures.nps, end)
    return {
        "period_end": end.isoformat(),
        "funnels": {name: [s.users for s in steps] for name, steps in funnel_results.items()},
        "adoption": {name: a.share for name, a in adoption_results.items()},
        "nps": figures.nps,
        "recurring_themes": sorted(t for t, v in figures.themes.items() if v["recurring"]),
    }


def run_experiments(
    config: EventopsConfig, platform_url: str, now: datetime, names: list[str] | None = None
) -> dict[str, Any]:
    """Every experiment's figures at this hour; SRM incidents open and resolve here."""
    end = kpis.hour_floor(now)
    wanted = [e for e in config.insight.experiments if not names or e.name in names]
    with platform.connect(Conn.from_url(platform_url)) as db:
        counts = {e.name: experiments.fetch_counts(db, e, now) for e in wanted}
    summary: dict[str, Any] = {}
    with session_scope() as session:
        for experiment in wanted:
            outcome = experiments.evaluate_experiment(
                session, config, experiment, counts[experiment.name], end, now
            )
            summary[experiment.name] = {
                "srm": outcome.srm,
                "srm_p_value": outcome.srm_p_value,
                "variants": {v.variant: asdict(v) for v in outcome.variants},
            }
    return summary


def prune(config: EventopsConfig, now: datetime) -> dict[str, int]:
    """Old beacons, and the hourly KPI rows of periods long over (each period keeps its last)."""
    with session_scope() as session:
        return {
            "web_vitals": vitals.prune_beacons(session, now - config.insight.vitals.retention),
            "kpi_values": kpis.prune_history(session, now - timedelta(days=90)),
        }
