"""Every shipped manifest is valid, and the seed shapes load verbatim."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator.manifest import LOCAL_NODE, load_file
from tests.conftest import MANIFESTS

EXAMPLES = sorted(MANIFESTS.glob("*.yaml"))


def test_the_examples_folder_holds_the_required_shapes() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"single-device.yaml", "distributed-edge.yaml", "quickstart.yaml"} <= names
    assert len(names) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_manifest_is_valid_without_warnings(path: Path) -> None:
    loaded = load_file(path)
    assert loaded.warnings == ()


@pytest.mark.parametrize("name", ["single-device.yaml", "distributed-edge.yaml"])
def test_the_project_copies_of_the_seed_shapes_load(name: str) -> None:
    loaded = load_file(MANIFESTS / name)
    assert loaded.desired.type == name.removesuffix(".yaml")


SEED_SHA256 = {
    "single-device.yaml": "0362acde7abcfe5e0fd0176136b31e6f81d73ed2803f54eacda681a57fc04407",
    "distributed-edge.yaml": "6845e9821d8c0dd7321cd78d216849abf99b989adb9cd70e9a2c6458ec43e744",
}
"""SHA-256 of the two seed shapes as published: the project's copies must be them byte for
byte (recorded here, so a fresh clone checks it with nothing beside it)."""


@pytest.mark.parametrize("name", sorted(SEED_SHA256))
def test_the_project_copies_are_the_seed_shapes_byte_for_byte(name: str) -> None:
    assert hashlib.sha256((MANIFESTS / name).read_bytes()).hexdigest() == SEED_SHA256[name]


def test_single_device_seed_normalises_to_the_local_box() -> None:
    desired = load_file(MANIFESTS / "single-device.yaml").desired
    assert desired.type == "single-device"
    assert desired.nodes == ()  # everything goes on LOCAL_NODE
    assert LOCAL_NODE == "local"
    assert [(m.alias, m.role) for m in desired.models] == [
        ("phi-4-mini", "primary"),
        ("qwen2.5-0.5b", "secondary"),
    ]
    (agent,) = desired.agents
    assert (agent.name, agent.model, agent.tools) == (
        "primary-agent",
        "phi-4-mini",
        ("database", "calendar", "email"),
    )


def test_distributed_seed_gives_node_named_agents_that_nodes_model() -> None:
    desired = load_file(MANIFESTS / "distributed-edge.yaml").desired
    placed = {a.name: (a.model, a.preferred_nodes, a.replicas) for a in desired.agents}
    assert placed == {
        "customer-service": ("phi-4-mini", ("edge-1",), 1),
        "scheduling": ("phi-4-mini", ("edge-1",), 1),
        "technical-support": ("qwen2.5-coder-0.5b", ("edge-2",), 1),
        "documentation": ("qwen2.5-coder-0.5b", ("edge-2",), 1),
    }
    assert [n.id for n in desired.nodes] == ["edge-1", "edge-2"]
    assert desired.coordination.strategy == "peak-ewma"
    assert desired.coordination.failover == "automatic"
    assert desired.coordination.failure_timeout_s == 3.0


def test_extensions_are_normalised_to_units() -> None:
    desired = load_file(MANIFESTS / "clinic-fleet.yaml").desired
    assert desired.model("phi-4-mini").memory_bytes == 3 * 1024**3
    assert desired.agent("front-desk").replicas == 2
    assert desired.agent("records-lookup").tool_config["database"]["max_rows"] == 50
    kiosk = next(n for n in desired.nodes if n.id == "kiosk-1")
    assert kiosk.resources is not None
    assert kiosk.resources.idle_timeout_s == 900.0
    assert kiosk.resources.model_cache_bytes == 512 * 1024**2
    assert desired.escalation is not None
    assert desired.escalation.api_key_env == "EDGEFLEET_ESCALATION_KEY"
    quick = load_file(MANIFESTS / "quickstart.yaml").desired
    assert quick.resources.max_memory_fraction == 0.75
    assert quick.models[0].alias == "smollm2-135m"


def test_the_embedded_quickstart_is_the_example_quickstart() -> None:
    embedded = MANIFESTS.parent / "orchestrator" / "quickstart.yaml"
    assert embedded.read_bytes() == (MANIFESTS / "quickstart.yaml").read_bytes()
