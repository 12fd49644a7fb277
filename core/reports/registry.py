"""The reports directory: one folder per report with index.html, report.md, PNG charts and
meta.json. `list_reports` is what the CLI and the dashboard read."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

META = "meta.json"
HTML = "index.html"
MARKDOWN = "report.md"


@dataclass(frozen=True)
class ReportInfo:
    name: str
    kind: str
    created_at: datetime
    html_path: Path
    md_path: Path
    period_start: datetime | None = None
    period_end: datetime | None = None
    summary: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "created_at": self.created_at.isoformat(),
            "html_path": str(self.html_path),
            "md_path": str(self.md_path),
            "period_start": self.period_start.isoformat() if self.period_start else None,
            "period_end": self.period_end.isoformat() if self.period_end else None,
            "summary": self.summary or {},
        }


def reports_dir(var_dir: Path, directory: Path | None = None) -> Path:
    """`reports.directory` from the config when set, else EVENTOPS_VAR_DIR/reports."""
    return directory if directory is not None else var_dir / "reports"


def _read(folder: Path) -> ReportInfo | None:
    try:
        meta = json.loads((folder / META).read_text())
        return ReportInfo(
            name=meta["name"],
            kind=meta["kind"],
            created_at=datetime.fromisoformat(meta["created_at"]),
            html_path=folder / HTML,
            md_path=folder / MARKDOWN,
            period_start=datetime.fromisoformat(meta["period_start"])
            if meta.get("period_start")
            else None,
            period_end=datetime.fromisoformat(meta["period_end"])
            if meta.get("period_end")
            else None,
            summary=meta.get("summary") or {},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a half-written or foreign folder is not a report


def list_reports(
    var_dir: Path, directory: Path | None = None, kind: str | None = None
) -> list[ReportInfo]:
    """Every finished report, newest first (by period, then creation)."""
    root = reports_dir(var_dir, directory)
    if not root.is_dir():
        return []
    found = [
        info
        for folder in root.iterdir()
        if folder.is_dir() and not folder.name.startswith(".")
        for info in [_read(folder)]
        if info is not None and (kind is None or info.kind == kind)
    ]
    return sorted(found, key=lambda r: (r.period_end or r.created_at, r.created_at), reverse=True)


def get_report(var_dir: Path, name: str, directory: Path | None = None) -> ReportInfo | None:
    folder = reports_dir(var_dir, directory) / name
    if folder.parent != reports_dir(var_dir, directory) or name.startswith("."):
        return None  # no path tricks through the name
    return _read(folder) if folder.is_dir() else None


SERVABLE = (".html", ".md", ".png", ".json")


def asset_path(
    var_dir: Path, name: str, filename: str, directory: Path | None = None
) -> Path | None:
    """A file of a finished report for a web server to send (`index.html`, a chart), or None:
    only plain names directly in the report's folder, with a servable suffix."""
    report = get_report(var_dir, name, directory)
    if report is None or "/" in filename or "\\" in filename or filename.startswith("."):
        return None
    path = report.html_path.parent / filename
    if path.suffix not in SERVABLE or not path.is_file():
        return None
    return path


def publish(staging: Path, root: Path, name: str) -> Path:
    """Move a finished report folder into place, replacing an older one of the same name."""
    target = root / name
    if target.exists():
        old = root / f".old-{name}"
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)
    return target


def prune(root: Path, keep: int, kind: str | None = None) -> list[str]:
    """Delete all but the newest `keep` reports (of one kind)."""
    reports = list_reports(root.parent, root, kind)
    removed = []
    for info in reports[keep:]:
        shutil.rmtree(info.html_path.parent, ignore_errors=True)
        removed.append(info.name)
    return removed
