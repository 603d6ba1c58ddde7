"""The README stays true: its manifest reference covers every key, its examples load."""

from __future__ import annotations

import json
import re

from orchestrator.manifest import load_text
from orchestrator.manifest.schema import SCHEMA_FILE
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_every_manifest_key_has_a_reference_row() -> None:
    schema = json.loads((REPO / SCHEMA_FILE).read_text(encoding="utf-8"))
    keys = {key for d in schema["$defs"].values() for key in d.get("properties", {})}
    missing = sorted(k for k in keys if f"| `{k}` |" not in README)
    assert not missing, f"README's manifest reference lacks rows for: {missing}"


def test_yaml_examples_in_the_readme_are_valid_manifests() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README, flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        load_text(block, source="README.md")
