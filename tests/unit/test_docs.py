"""The configuration reference names every setting and every check field, so it cannot drift."""

from __future__ import annotations

from pathlib import Path

from models.config import CheckConfig, EventopsConfig
from workers.settings import Settings


def test_every_environment_setting_is_documented(repo_root: Path) -> None:
    reference = (repo_root / "docs" / "configuration.md").read_text()
    missing = [
        f"EVENTOPS_{name.upper()}"
        for name in Settings.model_fields
        if f"EVENTOPS_{name.upper()}" not in reference
    ]
    assert missing == []


def test_every_config_field_is_documented(repo_root: Path) -> None:
    reference = (repo_root / "docs" / "configuration.md").read_text()
    fields = [*EventopsConfig.model_fields, *CheckConfig.model_fields]
    assert [
        name for name in fields if f"`{name}`" not in reference and f"{name}:" not in reference
    ] == []
