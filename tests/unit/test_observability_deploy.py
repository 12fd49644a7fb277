"""The optional Prometheus and Grafana in docker-compose.yml fit together: the profile, the
mounted files, the scrape target, the data source the dashboard names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "eventops-dashboard.json"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [p for p in found if p["type"] != "row"]


def test_prometheus_and_grafana_start_only_with_the_observability_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"], name
    unprofiled = [name for name, svc in services.items() if "profiles" not in svc]
    assert "prometheus" not in unprofiled and "dashboard" in unprofiled


def test_every_mounted_file_exists_in_the_repository(services: dict[str, dict[str, Any]]) -> None:
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_the_dashboard_service_with_the_metrics_token(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "eventops")
    assert job["metrics_path"] == "/metrics"
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    dashboard = services[host]
    assert dashboard["command"][0] == "dashboard"
    assert f"{port}:{port}" in " ".join(dashboard["ports"])
    assert "--port" in dashboard["command"] and port in dashboard["command"]
    # The token file Prometheus reads is written from the same variable the app reads.
    assert job["authorization"]["credentials_file"] in " ".join(services["prometheus"]["command"])
    assert "EVENTOPS_METRICS_TOKEN" in services["prometheus"]["environment"]
    app_env = services["dashboard"]["environment"]
    assert "EVENTOPS_METRICS_TOKEN" in app_env


def test_grafana_provisions_the_data_source_the_dashboard_uses() -> None:
    sources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    uids = {s["uid"] for s in sources}
    assert {s["url"] for s in sources} == {"http://prometheus:9090"}
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "eventops.yml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        grid = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        assert grid["x"] + grid["w"] <= 24
        taken |= cells


def dashboard_metric_names() -> set[str]:
    names: set[str] = set()
    for panel in panels(json.loads(DASHBOARD.read_text())):
        for target in panel["targets"]:
            names |= set(re.findall(r"\beventops_[a-z_]+\b", target["expr"]))
    return names


def test_the_dashboard_queries_eventops_metrics() -> None:
    # tests/integration/test_grafana_metrics.py checks each name against a real scrape.
    assert len(dashboard_metric_names()) >= 10
