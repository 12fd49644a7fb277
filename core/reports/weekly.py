"""The weekly performance report: HTML and Markdown with PNG charts, in the reports directory.

It covers one ISO week in UTC (Monday 00:00 to Monday 00:00), by default the last complete
one before `now`, and is written to `<reports>/weekly-<year>-W<week>/`: `index.html`,
`report.md`, one PNG per chart next to them (plain relative links, so both documents show
the same files and the folder can be copied, served or mailed as it is) and `meta.json` for
the registry. Writing goes to a hidden staging folder first and is moved into place whole,
so a reader never sees half a report; running it again for the same week replaces it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.clock import utcnow
from core.reports import charts
from core.reports.data import WeeklyData, collect
from core.reports.registry import HTML, MARKDOWN, META, ReportInfo, prune, publish
from models.config import EventopsConfig

KIND = "weekly"


def week_bounds(now: datetime, week_start: datetime | None = None) -> tuple[datetime, datetime]:
    """(Monday 00:00 UTC, next Monday) of the given week, or of the last complete week."""
    if week_start is None:
        today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        this_monday = today - timedelta(days=today.weekday())
        return this_monday - timedelta(days=7), this_monday
    start = week_start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start -= timedelta(days=start.weekday())
    return start, start + timedelta(days=7)


def report_name(since: datetime) -> str:
    year, week, _ = since.isocalendar()
    return f"weekly-{year}-W{week:02d}"


# --- formatting ---------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _quantity(metric: str, value: float | None, currency: str) -> str:
    if value is None:
        return "-"
    if metric.endswith("_bytes"):
        for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(value) >= size:
                return f"{value / size:,.2f} {unit}"
        return f"{value:,.0f} B"
    if metric == "monthly_cost":
        return f"{value:,.2f} {currency}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def _vital(metric: str, value: float | None) -> str:
    """CLS is a unitless score; the other vitals are milliseconds."""
    if value is None:
        return "-"
    return f"{value:.3f}" if metric.upper() == "CLS" else f"{value:,.0f} ms"


def _when(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%a %d %b %H:%M")


class _Table:
    def __init__(self, header: Sequence[str], rows: Iterable[Sequence[str]]):
        self.header = list(header)
        self.rows = [list(r) for r in rows]

    def html(self) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def markdown(self) -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [
            "| " + " | ".join(cell(h) for h in self.header) + " |",
            "|" + "---|" * len(self.header),
        ]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


class _Section:
    def __init__(self, title: str):
        self.title = title
        self.parts: list[tuple[str, Any]] = []

    def text(self, text: str) -> _Section:
        self.parts.append(("text", text))
        return self

    def table(self, header: Sequence[str], rows: Iterable[Sequence[str]]) -> _Section:
        rows = list(rows)
        if rows:
            self.parts.append(("table", _Table(header, rows)))
        return self

    def image(self, charts_drawn: dict[str, str], key: str, alt: str) -> _Section:
        if key in charts_drawn:
            self.parts.append(("image", (charts_drawn[key], alt)))
        return self

    def html(self) -> str:
        out = [f"<section><h2>{escape(self.title)}</h2>"]
        for kind, part in self.parts:
            if kind == "text":
                out.append(f"<p>{escape(part)}</p>")
            elif kind == "table":
                out.append(part.html())
            else:
                src, alt = part
                out.append(f'<img src="{escape(src)}" alt="{escape(alt)}">')
        out.append("</section>")
        return "\n".join(out)

    def markdown(self) -> str:
        out = [f"## {self.title}", ""]
        for kind, part in self.parts:
            if kind == "text":
                out += [part, ""]
            elif kind == "table":
                out += [part.markdown(), ""]
            else:
                src, alt = part
                out += [f"![{alt}]({src})", ""]
        return "\n".join(out)


# --- the report ---------------------------------------------------------------------------


def summary_figures(data: WeeklyData, warn_within_days: float = 30) -> dict[str, Any]:
    probes = sum(s.probes for s in data.services)
    up = sum((s.uptime or 0.0) * s.probes for s in data.services)
    resolved = [i.minutes_to_resolve for i in data.incidents if i.minutes_to_resolve is not None]
    by_severity = {
        severity: sum(1 for i in data.incidents if i.severity == severity)
        for severity in ("critical", "warning", "info")
    }
    worst = max(
        (s for s in data.services if s.p95_ms is not None),
        key=lambda s: s.p95_ms or 0.0,
        default=None,
    )
    warnings = [
        f.metric
        for f in data.forecasts
        if f.days_to_limit is not None
        and f.limit is not None
        and f.days_to_limit < warn_within_days
    ]
    return {
        "uptime": up / probes if probes else None,
        "probes": probes,
        "incidents": len(data.incidents),
        "incidents_by_severity": by_severity,
        "mttr_minutes": sum(resolved) / len(resolved) if resolved else None,
        "worst_p95_service": worst.name if worst else None,
        "worst_p95_ms": worst.p95_ms if worst else None,
        "capacity_limits_within_30_days": warnings,
    }


def sections(
    data: WeeklyData, drawn: dict[str, str], config: EventopsConfig, summary: dict[str, Any]
) -> list[_Section]:
    settings = config.reports
    currency = config.capacity.costs.currency
    mttr = summary["mttr_minutes"]
    overview = _Section("Summary").table(
        ["figure", "value"],
        [
            ["Uptime (all services, probe-weighted)", _pct(summary["uptime"], 3)],
            ["Probes", f"{summary['probes']:,}"],
            [
                "Incidents opened",
                f"{summary['incidents']} ("
                + ", ".join(f"{n} {s}" for s, n in summary["incidents_by_severity"].items())
                + ")",
            ],
            ["Mean time to resolve", "-" if mttr is None else f"{mttr:,.0f} min"],
            [
                "Slowest service (p95)",
                f"{summary['worst_p95_service']} ({_ms(summary['worst_p95_ms'])})"
                if summary["worst_p95_service"]
                else "-",
            ],
            [
                f"Capacity limits within {config.capacity.warn_within_days:g} days",
                ", ".join(summary["capacity_limits_within_30_days"]) or "none",
            ],
        ],
    )

    response = _Section("Response times")
    if data.services:
        response.text(
            f"p50, p95 and p99 per service over the week, from {data.source}; the dashed line "
            f"is the p95 target of {settings.response_time_slo_ms:,.0f} ms."
        )
        response.table(
            ["service", "group", "probes", "p50", "p95", "p99"],
            [
                [s.name, s.group, f"{s.probes:,}", _ms(s.p50_ms), _ms(s.p95_ms), _ms(s.p99_ms)]
                for s in data.services
            ],
        ).image(drawn, "response_times", "Response times per service")
    else:
        response.text("No data: no probe ran this week.")

    availability = _Section("Uptime and error rates")
    if data.services:
        availability.text(f"Uptime target {_pct(settings.uptime_target, 2)}.").table(
            ["service", "uptime", "error rate", "meets target"],
            [
                [
                    s.name,
                    _pct(s.uptime, 3),
                    _pct(s.error_rate, 3),
                    "-"
                    if s.uptime is None
                    else ("yes" if s.uptime >= settings.uptime_target else "no"),
                ]
                for s in data.services
            ],
        ).image(drawn, "uptime", "Uptime per service").image(
            drawn, "error_rates", "Error rate per day"
        )
    else:
        availability.text("No data.")

    incidents = _Section("Incidents")
    if data.incidents:
        incidents.table(
            ["id", "opened", "severity", "category", "title", "status", "time to resolve"],
            [
                [
                    str(i.id),
                    _when(i.opened_at),
                    i.severity,
                    i.category,
                    i.title,
                    i.status,
                    "-" if i.minutes_to_resolve is None else f"{i.minutes_to_resolve:,.0f} min",
                ]
                for i in data.incidents
            ],
        ).image(drawn, "incidents", "Incidents per day")
    else:
        incidents.text("No incident this week.")

    vitals = _Section("Core Web Vitals (p75)")
    if data.vitals:
        vitals.table(
            ["page", "device", "metric", "p75", "threshold", "samples", "good"],
            [
                [
                    v.page,
                    v.device,
                    v.metric,
                    _vital(v.metric, v.p75),
                    _vital(v.metric, v.threshold),
                    f"{v.samples:,}",
                    "-" if v.ok is None else ("yes" if v.ok else "no"),
                ]
                for v in data.vitals
            ],
        ).image(drawn, "vitals", "Web Vitals p75 against thresholds")
    else:
        vitals.text("No data.")

    kpis = _Section("KPIs against targets")
    if data.kpis:
        kpis.table(
            ["KPI", "value", "target", "expected so far", "period", "on target"],
            [
                [
                    k.name,
                    "-" if k.value is None else f"{k.value:,.4g}",
                    f"{k.target:,.4g}",
                    f"{k.expected:,.4g}",
                    k.period,
                    "-" if k.ok is None else ("yes" if k.ok else "no"),
                ]
                for k in data.kpis
            ],
        ).image(drawn, "kpis", "KPIs against targets")
    else:
        kpis.text("No data.")

    capacity = _Section("Capacity forecasts")
    if data.forecasts:
        capacity.text(
            "Each figure is forecast with a least-squares line and with Holt's double "
            "exponential smoothing; the model with the smaller error on the newest days held "
            "out is used."
        ).table(
            ["figure", "now", "per day", "in 30 days", "limit", "days to limit", "model"],
            [
                [
                    f.metric + (f" ({f.subject})" if f.subject != "platform" else ""),
                    _quantity(f.metric, f.current, currency),
                    _quantity(f.metric, f.slope_per_day, currency),
                    _quantity(f.metric, f.in_30_days, currency),
                    _quantity(f.metric, f.limit, currency),
                    "-" if f.days_to_limit is None else f"{f.days_to_limit:,.0f} ({f.reaches_on})",
                    f.why,
                ]
                for f in data.forecasts
            ],
        ).image(drawn, "capacity", "Capacity history and forecast")
    else:
        capacity.text("No data: no capacity snapshot yet.")
    capacity.table(
        ["action", "when", "now", "due"],
        [
            [a.action, a.threshold, a.current, "-" if a.due is None else ("yes" if a.due else "no")]
            for a in data.scaling
        ],
    )

    patterns = _Section("New and regressed error patterns")
    if data.error_patterns:
        patterns.table(
            ["pattern", "service", "kind", "class", "occurrences", "first seen", "last seen"],
            [
                [
                    p.template[:120],
                    p.service,
                    p.kind,
                    p.classification,
                    f"{p.occurrences:,}",
                    _when(p.first_seen),
                    _when(p.last_seen),
                ]
                for p in data.error_patterns
            ],
        )
    else:
        patterns.text("None.")
    return [overview, response, availability, incidents, vitals, kpis, capacity, patterns]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; }
th { background: #f4f6f8; }
img { max-width: 100%; display: block; margin: 0.5rem 0 1.5rem; }
section { margin-bottom: 2rem; }
footer { color: #777; font-size: 0.8rem; }
"""


def render_html(title: str, parts: list[_Section], footer: str) -> str:
    body = "\n".join(s.html() for s in parts)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{escape(title)}</h1>\n{body}\n<footer>{escape(footer)}</footer></body></html>\n"
    )


def render_markdown(title: str, parts: list[_Section], footer: str) -> str:
    return f"# {title}\n\n" + "\n".join(s.markdown() for s in parts) + f"\n---\n{footer}\n"


def build_weekly_report(
    session: Session,
    config: EventopsConfig,
    root: Path,
    now: datetime | None = None,
    week_start: datetime | None = None,
) -> ReportInfo:
    """Collect, draw, render and publish one week's report; returns where it is."""
    now = now or utcnow()
    since, until = week_bounds(now, week_start)
    name = report_name(since)
    data = collect(session, config, since, until)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        drawn = charts.draw_all(data, staging, config.reports)
        summary = summary_figures(data, config.capacity.warn_within_days)
        parts = sections(data, drawn, config, summary)
        year, week, _ = since.isocalendar()
        title = (
            f"Weekly performance report, {year} week {week} "
            f"({since:%d %b} to {until - timedelta(days=1):%d %b %Y})"
        )
        footer = (
            f"Generated {now.astimezone(UTC):%Y-%m-%d %H:%M} UTC by eventops for the period "
            f"{since.isoformat()} to {until.isoformat()}; response times from {data.source}."
            + (" " + " ".join(data.notes) if data.notes else "")
        )
        (staging / HTML).write_text(render_html(title, parts, footer), encoding="utf-8")
        (staging / MARKDOWN).write_text(render_markdown(title, parts, footer), encoding="utf-8")
        meta = {
            "name": name,
            "kind": KIND,
            "created_at": now.isoformat(),
            "period_start": since.isoformat(),
            "period_end": until.isoformat(),
            "charts": drawn,
            "summary": summary,
        }
        (staging / META).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        folder = publish(staging, root, name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prune(root, config.reports.keep, KIND)
    return ReportInfo(
        name=name,
        kind=KIND,
        created_at=now,
        html_path=folder / HTML,
        md_path=folder / MARKDOWN,
        period_start=since,
        period_end=until,
        summary=summary,
    )
