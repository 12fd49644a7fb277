"""docs/openapi.json is the dashboard API's schema as the code generates it, never stale."""

from __future__ import annotations

import json
from pathlib import Path

from web.app import openapi_document

ROOT = Path(__file__).resolve().parent.parent.parent
COMMITTED = ROOT / "docs" / "openapi.json"
REGENERATE = ".venv/bin/python -m web.app --openapi > docs/openapi.json"


def test_the_committed_openapi_document_matches_the_code() -> None:
    generated = json.loads(json.dumps(openapi_document(), sort_keys=True))
    committed = json.loads(COMMITTED.read_text())
    assert committed == generated, f"docs/openapi.json is stale: run {REGENERATE}"


def test_every_api_route_is_documented_with_a_summary_and_acknowledge_names_the_csrf_header() -> (
    None
):
    paths = openapi_document()["paths"]
    assert "/api/checks" in paths and "/api/incidents/{incident_id}/acknowledge" in paths
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
    acknowledge = paths["/api/incidents/{incident_id}/acknowledge"]["post"]
    assert "X-CSRF-Token" in acknowledge["description"]
    assert "403" in acknowledge["responses"]
