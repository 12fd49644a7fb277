"""Dependency vulnerability scan: installed Python distributions and npm lockfiles against
OSV advisories from a local directory or archive (osv.dev's per-ecosystem all.zip), and
optionally the OSV API when the machine is online.

Matching follows the OSV schema: an advisory's `affected[]` entry names a package
(ecosystem + name) and lists explicit `versions` and/or `ranges` of events (`introduced`,
`fixed`, `last_affected`, `limit`). ECOSYSTEM and SEMVER ranges are evaluated with the
ecosystem's own ordering: PEP 440 for PyPI (packaging.version), semantic versioning for npm.
GIT ranges name commits, not releases, and are skipped.
"""

from __future__ import annotations

import json
import math
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.compliance.findings import Finding, at_least, sync_findings
from models.config import EventopsConfig
from models.tables import Incident

PYPI, NPM = "PyPI", "npm"
ECOSYSTEMS = (PYPI, NPM)


# --- versions ---------------------------------------------------------------------------------

_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z.-]+)?$"
)

SemverKey = tuple[int, int, int, tuple[Any, ...]]


def semver_key(version: str) -> SemverKey:
    """Semantic Versioning 2.0 precedence: a release outranks its pre-releases; numeric
    pre-release identifiers sort below alphanumeric ones; build metadata is ignored."""
    match = _SEMVER.match(version.strip())
    if not match:
        raise ValueError(f"not a semantic version: {version!r}")
    major, minor, patch, pre = match.groups()
    if pre is None:
        rest: tuple[Any, ...] = (1,)
    else:
        rest = (
            0,
            tuple(
                (0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split(".")
            ),
        )
    return int(major), int(minor), int(patch), rest


def version_key(ecosystem: str, version: str) -> Any:
    """A sortable key for `version` in `ecosystem`; ValueError if it cannot be read."""
    if ecosystem == PYPI:
        try:
            return Version(version)
        except InvalidVersion:
            raise ValueError(f"not a PEP 440 version: {version!r}") from None
    if ecosystem == NPM:
        return semver_key(version)
    raise ValueError(f"unsupported ecosystem {ecosystem!r}")


def normalize_name(ecosystem: str, name: str) -> str:
    """PyPI names compare after PEP 503 normalization; npm names are exact."""
    if ecosystem == PYPI:
        return re.sub(r"[-_.]+", "-", name).lower()
    return name


def _is_zero(version: str) -> bool:
    return version == "0"


def affected_by_ranges(ecosystem: str, version: str, ranges: list[dict[str, Any]]) -> bool:
    """OSV's range evaluation: walk each range's events in version order; `introduced`
    opens an affected span, `fixed`/`limit` close it at that version, `last_affected`
    closes it after that version."""
    key = version_key(ecosystem, version)
    for entry in ranges:
        if entry.get("type") not in ("ECOSYSTEM", "SEMVER"):
            continue
        events: list[tuple[Any, int, str, str]] = []
        for event in entry.get("events", []):
            for kind, value in event.items():
                if kind not in ("introduced", "fixed", "last_affected", "limit"):
                    continue
                try:
                    ordered = (0,) if _is_zero(value) else (1, version_key(ecosystem, value))
                except ValueError:
                    continue
                events.append(
                    (
                        ordered,
                        ("introduced", "fixed", "last_affected", "limit").index(kind),
                        kind,
                        value,
                    )
                )
        affected = False
        for ordered, _, kind, _value in sorted(events, key=lambda e: (e[0], e[1])):
            bound = ordered[1] if len(ordered) > 1 else None
            if bound is None:  # introduced "0": from the very first release
                affected = affected or kind == "introduced"
            elif kind == "introduced":
                affected = affected or key >= bound
            elif kind == "last_affected":
                affected = affected and not key > bound
            else:  # fixed, limit: this version and later are not affected
                affected = affected and not key >= bound
        if affected:
            return True
    return False


def fixed_versions(affected: dict[str, Any]) -> list[str]:
    return sorted(
        {
            event["fixed"]
            for entry in affected.get("ranges", [])
            for event in entry.get("events", [])
            if "fixed" in event
        }
    )


# --- severity ---------------------------------------------------------------------------------

_CVSS3 = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "CIA": {"H": 0.56, "L": 0.22, "N": 0.0},
}


def _roundup(value: float) -> float:
    """CVSS 3.1's Roundup: the smallest one-decimal number >= value, free of float error."""
    scaled = round(value * 100000)
    if scaled % 10000 == 0:
        return scaled / 100000.0
    return (math.floor(scaled / 10000) + 1) / 10.0


def cvss3_base_score(vector: str) -> float:
    """The base score of a CVSS v3.0/v3.1 vector (`CVSS:3.1/AV:N/AC:L/...`)."""
    parts = dict(part.split(":", 1) for part in vector.split("/")[1:] if ":" in part)
    changed = parts["S"] == "C"
    pr = {"N": 0.85, "L": 0.68 if changed else 0.62, "H": 0.5 if changed else 0.27}[parts["PR"]]
    iss = 1 - (
        (1 - _CVSS3["CIA"][parts["C"]])
        * (1 - _CVSS3["CIA"][parts["I"]])
        * (1 - _CVSS3["CIA"][parts["A"]])
    )
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    exploitability = 8.22 * _CVSS3["AV"][parts["AV"]] * _CVSS3["AC"][parts["AC"]] * pr
    exploitability *= _CVSS3["UI"][parts["UI"]]
    if impact <= 0:
        return 0.0
    total = 1.08 * (impact + exploitability) if changed else impact + exploitability
    return _roundup(min(total, 10.0))


def rating(score: float) -> str:
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else "info"


_WORDS = {
    "critical": "critical",
    "high": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
}


def advisory_severity(advisory: dict[str, Any]) -> tuple[str, float | None, str]:
    """(severity, score, where it came from): a CVSS v3 vector's base score first, else the
    database's own word (GitHub's LOW/MODERATE/HIGH/CRITICAL), else `unknown`."""
    for entry in advisory.get("severity", []) or []:
        score_text = str(entry.get("score", ""))
        if entry.get("type") == "CVSS_V3" and score_text.startswith("CVSS:3"):
            try:
                score = cvss3_base_score(score_text)
            except (KeyError, ValueError):
                continue
            return rating(score), score, score_text
    word = str((advisory.get("database_specific") or {}).get("severity", "")).lower()
    if word in _WORDS:
        return _WORDS[word], None, "database_specific.severity"
    for affected in advisory.get("affected", []):
        for block in ("ecosystem_specific", "database_specific"):
            word = str((affected.get(block) or {}).get("severity", "")).lower()
            if word in _WORDS:
                return _WORDS[word], None, f"affected.{block}.severity"
    return "unknown", None, "none"


# --- advisories -------------------------------------------------------------------------------


@dataclass
class AdvisoryIndex:
    """Advisories by (ecosystem, normalized package name)."""

    by_package: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    count: int = 0
    unreadable: list[str] = field(default_factory=list)

    def add(self, advisory: dict[str, Any]) -> None:
        if advisory.get("withdrawn"):
            return
        self.count += 1
        seen: set[tuple[str, str]] = set()
        for affected in advisory.get("affected", []):
            package = affected.get("package") or {}
            ecosystem = str(package.get("ecosystem", "")).split(":")[0]
            if ecosystem not in ECOSYSTEMS or not package.get("name"):
                continue
            key = (ecosystem, normalize_name(ecosystem, str(package["name"])))
            if key not in seen:
                self.by_package.setdefault(key, []).append(advisory)
                seen.add(key)

    def lookup(self, ecosystem: str, name: str) -> list[dict[str, Any]]:
        return self.by_package.get((ecosystem, normalize_name(ecosystem, name)), [])


def _json_documents(source: Path) -> Iterator[tuple[str, bytes]]:
    name = source.name.lower()
    if source.is_dir():
        for path in sorted(source.rglob("*.json")):
            yield str(path), path.read_bytes()
    elif name.endswith(".zip"):
        with zipfile.ZipFile(source) as archive:
            for member in archive.namelist():
                if member.endswith(".json"):
                    yield f"{source}:{member}", archive.read(member)
    elif name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(source) as archive:
            for entry in archive.getmembers():
                if entry.isfile() and entry.name.endswith(".json"):
                    handle = archive.extractfile(entry)
                    if handle is not None:
                        yield f"{source}:{entry.name}", handle.read()
    elif name.endswith(".json"):
        yield str(source), source.read_bytes()
    else:
        raise ValueError(f"{source}: not a directory, .zip, .tar.gz or .json of OSV advisories")


def load_advisories(source: Path) -> AdvisoryIndex:
    """Read every OSV JSON document under a directory or inside an archive."""
    if not source.exists():
        raise FileNotFoundError(f"advisory source {source} does not exist")
    index = AdvisoryIndex()
    for where, data in _json_documents(source):
        try:
            document = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            index.unreadable.append(where)
            continue
        for advisory in document if isinstance(document, list) else [document]:
            if isinstance(advisory, dict) and "id" in advisory:
                index.add(advisory)
    return index


# --- inventories ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    ecosystem: str
    name: str
    version: str
    source: str  # where it was found: the environment or the lockfile path (and its key)


def python_packages(paths: Iterable[Path] = ()) -> list[Package]:
    """Installed distributions: this interpreter's, or those under the given directories."""
    path_list = [str(p) for p in paths]
    dists = metadata.distributions(path=path_list) if path_list else metadata.distributions()
    found: dict[tuple[str, str], Package] = {}
    for dist in dists:
        name = dist.metadata["Name"] if dist.metadata else None
        if not name or not dist.version:
            continue
        where = ",".join(path_list) if path_list else "python environment"
        found[(normalize_name(PYPI, name), dist.version)] = Package(PYPI, name, dist.version, where)
    return sorted(found.values(), key=lambda p: (p.name.lower(), p.version))


def npm_packages(lockfile: Path) -> list[Package]:
    """Every package a package-lock.json pins: v2/v3 `packages` (keys `node_modules/...`),
    or v1's nested `dependencies`."""
    try:
        data = json.loads(lockfile.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{lockfile}: cannot read the lockfile ({error})") from None
    found: dict[tuple[str, str], Package] = {}
    packages = data.get("packages")
    if isinstance(packages, dict):
        for key, entry in packages.items():
            if not key or not isinstance(entry, dict) or entry.get("link"):
                continue
            name = entry.get("name") or key.rsplit("node_modules/", 1)[-1]
            version = entry.get("version")
            if name and version:
                found[(name, version)] = Package(NPM, name, version, f"{lockfile}:{key}")
    else:

        def walk(deps: dict[str, Any], trail: str) -> None:
            for name, entry in deps.items():
                if not isinstance(entry, dict):
                    continue
                version = entry.get("version")
                if version and not str(version).startswith(("file:", "link:", "git")):
                    found[(name, version)] = Package(
                        NPM, name, version, f"{lockfile}:{trail}{name}"
                    )
                walk(entry.get("dependencies") or {}, f"{trail}{name}>")

        walk(data.get("dependencies") or {}, "")
    return sorted(found.values(), key=lambda p: (p.name, p.version))


# --- matching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vulnerability:
    package: Package
    advisory_id: str
    aliases: tuple[str, ...]
    summary: str
    severity: str
    score: float | None
    severity_source: str
    fixed: tuple[str, ...]

    def finding(self) -> Finding:
        p = self.package
        return Finding(
            key=f"{p.ecosystem}:{p.name}@{p.version}:{self.advisory_id}",
            severity=self.severity,
            title=f"{p.name} {p.version} ({p.ecosystem}): {self.advisory_id} {self.summary}"[:300],
            evidence={
                "ecosystem": p.ecosystem,
                "package": p.name,
                "version": p.version,
                "found_in": p.source,
                "advisory": self.advisory_id,
                "aliases": list(self.aliases),
                "score": self.score,
                "severity_source": self.severity_source,
                "fixed_in": list(self.fixed),
            },
        )


def matches(package: Package, advisory: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether the advisory affects this package version, and the fixed versions it names."""
    for affected in advisory.get("affected", []):
        meta = affected.get("package") or {}
        if str(meta.get("ecosystem", "")).split(":")[0] != package.ecosystem:
            continue
        if normalize_name(package.ecosystem, str(meta.get("name", ""))) != normalize_name(
            package.ecosystem, package.name
        ):
            continue
        if package.version in (affected.get("versions") or []):
            return True, fixed_versions(affected)
        try:
            if affected_by_ranges(package.ecosystem, package.version, affected.get("ranges", [])):
                return True, fixed_versions(affected)
        except ValueError:
            continue  # the installed version itself cannot be ordered: no verdict
    return False, []


def scan(packages: Iterable[Package], index: AdvisoryIndex) -> list[Vulnerability]:
    found: list[Vulnerability] = []
    for package in packages:
        for advisory in index.lookup(package.ecosystem, package.name):
            hit, fixed = matches(package, advisory)
            if not hit:
                continue
            severity, score, source = advisory_severity(advisory)
            found.append(
                Vulnerability(
                    package=package,
                    advisory_id=str(advisory["id"]),
                    aliases=tuple(advisory.get("aliases") or ()),
                    summary=str(advisory.get("summary") or "")[:200],
                    severity=severity,
                    score=score,
                    severity_source=source,
                    fixed=tuple(fixed),
                )
            )
    return found


OSV_API = "https://api.osv.dev/v1"


def query_osv_api(
    packages: list[Package], get_json: Callable[[str, dict[str, Any] | None], Any] | None = None
) -> AdvisoryIndex:
    """Advisories for these packages from the OSV API (querybatch, then each vulnerability's
    full record). Only used with `vulnerabilities.online: true`; untested here, where no
    route to api.osv.dev exists."""
    import httpx

    def default(url: str, body: dict[str, Any] | None) -> Any:
        with httpx.Client(timeout=30.0) as client:
            response = client.post(url, json=body) if body is not None else client.get(url)
            response.raise_for_status()
            return response.json()

    fetch = get_json or default
    index = AdvisoryIndex()
    ids: set[str] = set()
    for start in range(0, len(packages), 500):
        chunk = packages[start : start + 500]
        queries = [
            {"package": {"name": p.name, "ecosystem": p.ecosystem}, "version": p.version}
            for p in chunk
        ]
        answer = fetch(f"{OSV_API}/querybatch", {"queries": queries})
        for result in answer.get("results", []):
            ids.update(v["id"] for v in result.get("vulns", []) or [])
    for vuln_id in sorted(ids):
        index.add(fetch(f"{OSV_API}/vulns/{vuln_id}", None))
    return index


def merge(into: AdvisoryIndex, other: AdvisoryIndex) -> AdvisoryIndex:
    known = {a["id"] for advisories in into.by_package.values() for a in advisories}
    for advisories in other.by_package.values():
        for advisory in advisories:
            if advisory["id"] not in known:
                into.add(advisory)
                known.add(advisory["id"])
    return into


# --- the weekly run ---------------------------------------------------------------------------

VULN_FINGERPRINT = "compliance:vulnerable:"


def run_scan(session: Session, config: EventopsConfig, now: datetime) -> dict[str, Any]:
    """Inventory, match, store findings, and raise one incident per package with a finding
    at or above `incident_severity` (resolving those of packages now clean)."""
    from core.incidents import Problem, raise_problem, resolve_problem

    settings = config.compliance.vulnerabilities
    if settings.advisories is None and not settings.online:
        return {"skipped": "no advisory source: set compliance.vulnerabilities.advisories"}
    notes: list[str] = []
    packages: list[Package] = []
    if settings.python:
        packages += python_packages(settings.python_paths)
    for lockfile in settings.npm_lockfiles:
        try:
            packages += npm_packages(lockfile)
        except ValueError as error:
            notes.append(str(error))
    index = load_advisories(settings.advisories) if settings.advisories else AdvisoryIndex()
    if settings.online:
        try:
            merge(index, query_osv_api(packages))
        except Exception as error:  # offline or refused: the local set still counts
            notes.append(f"OSV API not reachable: {type(error).__name__}: {error}")
    notes += [f"unreadable advisory: {where}" for where in index.unreadable[:20]]
    # A scan that saw no advisories (a broken sync) or skipped a lockfile cannot say that a
    # vulnerability is gone: its findings and incidents stay open until a complete scan.
    partial = index.count == 0 or len(notes) > 0 or not packages
    if index.count == 0:
        notes.append("no advisories were read: open findings and incidents are kept")
    found = scan(packages, index)
    counts = sync_findings(
        session,
        "vulnerability",
        [v.finding() for v in found],
        now,
        summary={"packages": len(packages), "advisories": index.count, "notes": notes},
        resolve_gone=not partial,
    )
    worst: dict[tuple[str, str], list[Vulnerability]] = {}
    for vuln in found:
        if at_least(vuln.severity, settings.incident_severity):
            worst.setdefault((vuln.package.ecosystem, vuln.package.name), []).append(vuln)
    raised: set[str] = set()
    for (ecosystem, name), vulns in sorted(worst.items()):
        fingerprint = f"{VULN_FINGERPRINT}{ecosystem}:{name}"
        raised.add(fingerprint)
        lines = [
            f"{v.package.version}: {v.advisory_id} ({v.severity}"
            + (f" {v.score}" if v.score is not None else "")
            + ")"
            + (f", fixed in {', '.join(v.fixed)}" if v.fixed else ", no fixed version")
            for v in vulns
        ]
        raise_problem(
            session,
            Problem(
                fingerprint=fingerprint,
                title=f"Vulnerable dependency: {name} ({ecosystem})",
                severity="critical",
                summary="; ".join(lines),
                labels={"category": "vulnerability", "package": name, "ecosystem": ecosystem},
                category="security",
                subject=f"{ecosystem}:{name}",
            ),
            config,
            now,
        )
    still_open = session.scalars(
        select(Incident.fingerprint).where(
            Incident.fingerprint.like(f"{VULN_FINGERPRINT}%"), Incident.status != "resolved"
        )
    ).all()
    gone = set() if partial else set(still_open) - raised
    for fingerprint in sorted(gone):
        resolve_problem(session, fingerprint, config, now, why="no longer found by the scan")
    return {
        "packages": len(packages),
        "advisories": index.count,
        "incidents": len(raised),
        **counts,
        **({"notes": notes} if notes else {}),
    }
