"""docs/config-reference.md is generated from the models: it is current and misses no field."""

from __future__ import annotations

from pathlib import Path

from models.config import EventopsConfig
from workers.config_reference import generate, sections, undocumented
from workers.settings import Settings


def test_the_committed_reference_is_the_generated_one(repo_root: Path) -> None:
    committed = (repo_root / "docs" / "config-reference.md").read_text()
    assert committed == generate(), "docs/config-reference.md is stale: run make docs"


def test_every_field_has_a_description() -> None:
    assert undocumented() == [], "add description=... to these fields, then run make docs"


def test_the_reference_names_every_setting_and_every_section_field() -> None:
    reference = generate()
    for name in Settings.model_fields:
        assert f"`EVENTOPS_{name.upper()}`" in reference
    for path, model in sections(EventopsConfig, ""):
        assert (f"### `{path}`" if path else "### Top level") in reference
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in reference, f"{path}.{name}"


def test_defaults_are_rendered_for_people_and_the_same_on_every_machine() -> None:
    reference = generate()
    assert "| `EVENTOPS_CONFIG_FILE` | path | `config/eventops.yaml` (in the repository) |" in (
        reference
    )
    # The package version depends on the installation: never written into the file.
    assert "| `EVENTOPS_RELEASE` | str (optional) | computed at start-up |" in reference
    assert "| `interval` | duration | **required** |" in reference
    assert "| `window` | duration | `15m` |" in reference
    assert "eventops'" not in reference.split("| `EVENTOPS_FLOWER_PASSWORD` |")[1].split("\n")[0]
