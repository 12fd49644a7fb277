"""The report's charts, drawn with matplotlib's Agg backend (no display) to PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from core.reports.data import WeeklyData

SEVERITY_COLOURS = {"critical": "#c0392b", "warning": "#e67e22", "info": "#3498db"}
DPI = 100


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=DPI)
    plt.close(figure)
    return path


def response_times(data: WeeklyData, path: Path, slo_ms: float) -> Path | None:
    services = [s for s in data.services if any(p[2] is not None for p in s.hourly)]
    if not services:
        return None
    rows = len(services)
    figure, axes = plt.subplots(rows, 1, figsize=(9, 2.4 * rows), sharex=True, squeeze=False)
    for axis, service in zip(axes[:, 0], services, strict=True):
        hours = [p[0] for p in service.hourly]
        for index, (label, colour) in enumerate(
            (("p50", "#2ecc71"), ("p95", "#e67e22"), ("p99", "#c0392b")), start=1
        ):
            values = [p[index] if p[index] is not None else float("nan") for p in service.hourly]
            axis.plot(hours, values, label=label, color=colour, linewidth=1.2)
        axis.axhline(slo_ms, color="#7f8c8d", linestyle="--", linewidth=0.8, label="p95 target")
        axis.set_title(service.name, fontsize=10, loc="left")
        axis.set_ylabel("ms")
        axis.grid(alpha=0.3)
        axis.legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%a %d"))
    figure.suptitle("Response times per service (hourly percentiles)", fontsize=11)
    return _save(figure, path)


def _bars(
    names: Sequence[str],
    values: Sequence[float],
    path: Path,
    title: str,
    ylabel: str,
    target: float | None = None,
    good_above: bool = True,
    ylim: tuple[float, float] | None = None,
) -> Path:
    figure, axis = plt.subplots(figsize=(9, 3.2))
    colours = [
        "#95a5a6"
        if target is None
        else ("#27ae60" if (value >= target if good_above else value <= target) else "#c0392b")
        for value in values
    ]
    axis.bar(names, values, color=colours)
    if target is not None:
        axis.axhline(target, color="#34495e", linestyle="--", linewidth=1, label="target")
        axis.legend(loc="lower right", fontsize=8)
    if ylim:
        axis.set_ylim(*ylim)
    axis.set_title(title, fontsize=11, loc="left")
    axis.set_ylabel(ylabel)
    axis.grid(axis="y", alpha=0.3)
    plt.setp(axis.get_xticklabels(), rotation=20, ha="right")
    return _save(figure, path)


def uptime(data: WeeklyData, path: Path, target: float) -> Path | None:
    services = [s for s in data.services if s.uptime is not None]
    if not services:
        return None
    values = [100 * (s.uptime or 0.0) for s in services]
    low = min([*values, 100 * target]) - 1
    return _bars(
        [s.name for s in services],
        values,
        path,
        "Uptime this week",
        "%",
        target=100 * target,
        ylim=(max(0.0, low), 100.5),
    )


def error_rates(data: WeeklyData, path: Path) -> Path | None:
    services = [s for s in data.services if s.daily_error_rate]
    if not services:
        return None
    figure, axis = plt.subplots(figsize=(9, 3.2))
    for service in services:
        days = [day for day, _ in service.daily_error_rate]
        axis.plot(
            mdates.date2num(days),
            [100 * r for _, r in service.daily_error_rate],
            marker="o",
            label=service.name,
        )
    axis.set_title("Error rate per day", fontsize=11, loc="left")
    axis.set_ylabel("% of probes down")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.xaxis.set_major_formatter(mdates.DateFormatter("%a %d"))
    return _save(figure, path)


def incidents(data: WeeklyData, path: Path) -> Path | None:
    if not data.incidents:
        return None
    days = data.days
    figure, axis = plt.subplots(figsize=(9, 3))
    bottom = [0] * len(days)
    for severity, counts in data.incidents_by_day().items():
        values = [counts.get(day, 0) for day in days]
        axis.bar(
            [d.strftime("%a %d") for d in days],
            values,
            bottom=bottom,
            label=severity,
            color=SEVERITY_COLOURS.get(severity, "#7f8c8d"),
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axis.set_title("Incidents opened per day", fontsize=11, loc="left")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def vitals(data: WeeklyData, path: Path) -> Path | None:
    rows = [v for v in (data.vitals or []) if getattr(v, "threshold", None)]
    if not rows:
        return None
    names = [f"{v.metric} {v.page} ({v.device})" for v in rows][:20]
    ratios = [v.p75 / v.threshold for v in rows][:20]
    figure, axis = plt.subplots(figsize=(9, max(2.5, 0.35 * len(names) + 1)))
    colours = ["#27ae60" if r < 1 else "#c0392b" for r in ratios]
    axis.barh(names, ratios, color=colours)
    axis.axvline(1.0, color="#34495e", linestyle="--", linewidth=1)
    axis.set_xlabel("p75 / threshold (under 1 is good)")
    axis.set_title("Core Web Vitals p75 against thresholds", fontsize=11, loc="left")
    axis.invert_yaxis()
    return _save(figure, path)


def kpis(data: WeeklyData, path: Path) -> Path | None:
    rows = [k for k in (data.kpis or []) if k.value is not None and k.target]
    if not rows:
        return None
    names = [k.name for k in rows]
    ratios = [k.value / k.target for k in rows]
    figure, axis = plt.subplots(figsize=(9, max(2.5, 0.4 * len(names) + 1)))
    colours = ["#27ae60" if k.ok else "#c0392b" if k.ok is False else "#95a5a6" for k in rows]
    axis.barh(names, ratios, color=colours)
    axis.axvline(1.0, color="#34495e", linestyle="--", linewidth=1, label="target")
    axis.set_xlabel("value / target")
    axis.set_title("KPIs against targets", fontsize=11, loc="left")
    axis.invert_yaxis()
    return _save(figure, path)


def capacity(data: WeeklyData, path: Path) -> Path | None:
    from datetime import date, timedelta

    shown = [f for f in data.forecasts if f.model is not None and len(f.history) >= 2][:6]
    if not shown:
        return None
    figure, axes = plt.subplots(len(shown), 1, figsize=(9, 2.6 * len(shown)), squeeze=False)
    for axis, forecast in zip(axes[:, 0], shown, strict=True):
        days = [date.fromisoformat(day) for day, _ in forecast.history]
        axis.plot(
            mdates.date2num(days),
            [v for _, v in forecast.history],
            color="#2c3e50",
            label="measured",
        )
        assert forecast.slope_per_day is not None and forecast.current is not None
        horizon = max(30.0, min(forecast.days_to_limit or 30.0, 365.0))
        end = days[-1] + timedelta(days=horizon)
        projected = forecast.current + forecast.slope_per_day * horizon
        axis.plot(
            mdates.date2num([days[-1], end]),
            [forecast.current, projected],
            color="#8e44ad",
            linestyle="--",
            label=f"forecast ({forecast.model})",
        )
        if forecast.limit is not None:
            axis.axhline(forecast.limit, color="#c0392b", linewidth=1, label="limit")
        label = forecast.metric + (f" {forecast.subject}" if forecast.subject != "platform" else "")
        axis.set_title(label, fontsize=10, loc="left")
        axis.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    figure.suptitle("Capacity: history and forecast", fontsize=11)
    return _save(figure, path)


def draw_all(data: WeeklyData, directory: Path, settings: Any) -> dict[str, str]:
    """Every chart that has data; returns section -> PNG file name."""
    drawn = {
        "response_times": response_times(
            data, directory / "response_times.png", settings.response_time_slo_ms
        ),
        "uptime": uptime(data, directory / "uptime.png", settings.uptime_target),
        "error_rates": error_rates(data, directory / "error_rates.png"),
        "incidents": incidents(data, directory / "incidents.png"),
        "vitals": vitals(data, directory / "vitals.png"),
        "kpis": kpis(data, directory / "kpis.png"),
        "capacity": capacity(data, directory / "capacity.png"),
    }
    return {section: p.name for section, p in drawn.items() if p is not None}
