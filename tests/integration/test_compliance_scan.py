"""The weekly vulnerability scan on real Postgres: a fixture advisory set finds the known
vulnerable pinned packages, stores findings with fixed versions, raises critical incidents,
and resolves them once the lockfile is fixed."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from core.compliance.findings import open_findings
from core.compliance.vulnerabilities import VULN_FINGERPRINT, run_scan
from models.db import session_scope
from models.tables import Incident
from tests.conftest import make_config
from tests.unit.test_vulnerability_matching import FIXTURES, fake_dist

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def scan_config(tmp_path: Path, lockfile: Path):  # type: ignore[no-untyped-def]
    return make_config(
        compliance={
            "vulnerabilities": {
                "advisories": str(FIXTURES / "advisories"),
                "python_paths": [str(tmp_path / "site")],
                "npm_lockfiles": [str(lockfile)],
            }
        }
    )


def test_scan_finds_lodash_4_17_15_from_the_fixture_advisories(
    clean_db: str, tmp_path: Path
) -> None:
    fake_dist(tmp_path / "site", "eventpros-vuln-pkg", "1.2.0")
    lockfile = tmp_path / "package-lock.json"
    shutil.copy(FIXTURES / "npm" / "package-lock.json", lockfile)
    config = scan_config(tmp_path, lockfile)
    with session_scope() as session:
        summary = run_scan(session, config, T0)
    assert summary["packages"] == 7 and summary["incidents"] == 3
    with session_scope() as session:
        found = {f.key: f for f in open_findings(session, "vulnerability")}
        incidents = session.scalars(
            select(Incident).where(Incident.fingerprint.like(f"{VULN_FINGERPRINT}%"))
        ).all()
    lodash = found["npm:lodash@4.17.15:GHSA-p6mc-m468-83gw"]
    assert lodash.severity == "high" and lodash.evidence["fixed_in"] == ["4.17.19"]
    assert lodash.evidence["aliases"] == ["CVE-2020-8203"]
    assert found["npm:lodash@4.17.15:GHSA-35jh-r3h4-6jhm"].severity == "critical"
    assert found["npm:minimist@1.2.5:GHSA-xvch-5gv4-984h"].evidence["fixed_in"] == [
        "0.2.4",
        "1.2.6",
    ]
    assert "npm:@eventpros/router@2.0.0-beta.1:FIXTURE-SCOPED-1" in found
    assert "PyPI:eventpros-vuln-pkg@1.2.0:FIXTURE-PY-1" in found
    assert not any(key.startswith("npm:minimist@1.2.8") for key in found)
    assert sorted(i.fingerprint for i in incidents) == [
        "compliance:vulnerable:PyPI:eventpros-vuln-pkg",
        "compliance:vulnerable:npm:lodash",
        "compliance:vulnerable:npm:minimist",
    ]
    assert all(i.severity == "critical" for i in incidents)
    lodash_incident = next(i for i in incidents if i.fingerprint.endswith(":lodash"))
    assert "fixed in 4.17.21" in (lodash_incident.summary or "")

    # The platform upgrades lodash and dedupes minimist: those findings and incidents resolve.
    data = json.loads(lockfile.read_text())
    data["packages"]["node_modules/lodash"]["version"] = "4.17.21"
    del data["packages"]["node_modules/mkdirp/node_modules/minimist"]
    lockfile.write_text(json.dumps(data))
    with session_scope() as session:
        again = run_scan(session, config, T0 + timedelta(days=7))
    assert again["incidents"] == 1 and again["resolved"] == 3
    with session_scope() as session:
        still = session.scalars(
            select(Incident.fingerprint).where(
                Incident.fingerprint.like(f"{VULN_FINGERPRINT}%"), Incident.status != "resolved"
            )
        ).all()
    assert still == ["compliance:vulnerable:PyPI:eventpros-vuln-pkg"]


def test_scan_without_an_advisory_source_says_so(clean_db: str) -> None:
    with session_scope() as session:
        summary = run_scan(session, make_config(), T0)
    assert "no advisory source" in summary["skipped"]


def test_an_unreadable_lockfile_is_reported_and_the_rest_still_scanned(
    clean_db: str, tmp_path: Path
) -> None:
    fake_dist(tmp_path / "site", "eventpros-vuln-pkg", "1.1")
    broken = tmp_path / "package-lock.json"
    broken.write_text("{")
    with session_scope() as session:
        summary = run_scan(session, scan_config(tmp_path, broken), T0)
    assert summary["incidents"] == 1
    assert any("cannot read the lockfile" in note for note in summary["notes"])


def test_a_scan_that_could_not_see_everything_resolves_nothing(
    clean_db: str, tmp_path: Path
) -> None:
    """An emptied advisory directory (a broken sync) or an unreadable lockfile must not read
    as "every vulnerability fixed": the open findings and incidents stay open."""
    fake_dist(tmp_path / "site", "eventpros-vuln-pkg", "1.2.0")
    lockfile = tmp_path / "package-lock.json"
    shutil.copy(FIXTURES / "npm" / "package-lock.json", lockfile)
    advisories = tmp_path / "advisories"
    shutil.copytree(FIXTURES / "advisories", advisories)
    config = scan_config(tmp_path, lockfile)
    config = config.model_copy(
        update={
            "compliance": config.compliance.model_copy(
                update={
                    "vulnerabilities": config.compliance.vulnerabilities.model_copy(
                        update={"advisories": advisories}
                    )
                }
            )
        }
    )
    with session_scope() as session:
        assert run_scan(session, config, T0)["incidents"] == 3

    def still_open() -> tuple[int, int]:
        with session_scope() as session:
            incidents = session.scalars(
                select(Incident).where(
                    Incident.fingerprint.like(f"{VULN_FINGERPRINT}%"),
                    Incident.status != "resolved",
                )
            ).all()
            return len(open_findings(session, "vulnerability")), len(incidents)

    before = still_open()
    lockfile.write_text("{")  # half-written by a deploy
    with session_scope() as session:
        summary = run_scan(session, config, T0 + timedelta(days=7))
    assert summary["resolved"] == 0 and still_open() == before

    lockfile.write_text((FIXTURES / "npm" / "package-lock.json").read_text())
    shutil.rmtree(advisories)
    advisories.mkdir()  # the sync emptied it
    with session_scope() as session:
        summary = run_scan(session, config, T0 + timedelta(days=14))
    assert any("no advisories were read" in note for note in summary["notes"])
    assert summary["resolved"] == 0 and still_open() == before
