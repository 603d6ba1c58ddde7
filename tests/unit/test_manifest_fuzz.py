"""Property tests: whatever the input, the loader answers with a result or a ManifestError."""

from __future__ import annotations

import yaml
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.manifest import ManifestError, load_text
from tests.conftest import MANIFESTS

SEEDS = [p.read_text(encoding="utf-8") for p in sorted(MANIFESTS.glob("*.yaml"))]
YAML_PIECES = [
    ":",
    "-",
    " ",
    "\n",
    "  ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "&a",
    "*a",
    "!!str",
    "!!int",
    "?",
    "#",
    "'",
    '"',
    "|",
    ">",
    "<<",
    "---",
    "...",
    "%YAML 1.2",
    "deployment",
    "type",
    "single-device",
    "distributed-edge",
    "models",
    "agents",
    "nodes",
    "alias",
    "true",
    "null",
    "~",
    "0x1f",
    ".inf",
    "1e9",
    "9" * 30,
    "\t",
    "\x00",
    "é",
    "\ufeff",
]


def _load(text: str) -> None:
    try:
        load_text(text, source="fuzz.yaml")
    except ManifestError as exc:
        diagnostics = exc.diagnostics
    else:
        return
    assert diagnostics, "a ManifestError always carries at least one diagnostic"
    for diagnostic in diagnostics:
        assert diagnostic.line >= 1
        assert diagnostic.column >= 1
        assert diagnostic.message


@given(st.text(max_size=400))
def test_random_text(text: str) -> None:
    _load(text)


@given(st.lists(st.sampled_from(YAML_PIECES), max_size=60).map("".join))
def test_random_yaml_token_soup(text: str) -> None:
    _load(text)


@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=4000),
            st.integers(0, 8),
            st.sampled_from(YAML_PIECES),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_manifests(seed: str, edits: list[tuple[int, int, str]]) -> None:
    text = seed
    for position, deleted, inserted in edits:
        at = position % (len(text) + 1)
        text = text[:at] + inserted + text[at + deleted :]
    _load(text)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.sampled_from(SEEDS), st.data())
def test_structurally_mutated_manifests(seed: str, data: st.DataObject) -> None:
    document = yaml.safe_load(seed)
    node = document
    while isinstance(node, dict | list) and node and data.draw(st.booleans()):
        key = data.draw(
            st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node)))
        )
        if not isinstance(node[key], dict | list) or data.draw(st.booleans()):
            node[key] = data.draw(JSON_VALUES)
            break
        node = node[key]
    _load(yaml.safe_dump(document))
