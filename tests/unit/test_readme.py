"""The README stays true: its manifest reference covers every key, its examples load,
and every command it names exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from node_agent.catalog import Catalog
from orchestrator.cli.main import build_parser
from orchestrator.manifest import load_text
from orchestrator.manifest.schema import SCHEMA_FILE
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_every_manifest_key_has_a_reference_row() -> None:
    schema = json.loads((REPO / SCHEMA_FILE).read_text(encoding="utf-8"))
    keys = {key for d in schema["$defs"].values() for key in d.get("properties", {})}
    missing = sorted(k for k in keys if f"| `{k}` |" not in README)
    assert not missing, f"README's manifest reference lacks rows for: {missing}"


def test_yaml_examples_in_the_readme_are_valid_manifests_or_catalogs(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README, flags=re.S)
    manifests = [b for b in blocks if b.lstrip().startswith("deployment:")]
    catalogs = [b for b in blocks if b not in manifests]
    assert len(manifests) >= 2
    assert catalogs, "the README shows a node catalog"
    for block in manifests:
        load_text(block, source="README.md")
    for index, block in enumerate(catalogs):
        path = tmp_path / f"catalog-{index}.yaml"
        path.write_text(block, encoding="utf-8")
        catalog = Catalog.load(path)
        assert catalog.path == path


def test_every_edgectl_command_in_the_readme_exists() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    named = set(re.findall(r"`edgectl ([a-z]+)", README))
    assert named, "the README names edgectl commands"
    assert named <= set(commands), f"README names unknown commands: {named - set(commands)}"
