"""Scheduling knows where model blobs are: placement prefers holders and their site, the
plan says what each node must fetch, learned hashes reach the models without a pin."""

from __future__ import annotations

import pytest

from orchestrator.errors import PlacementError
from orchestrator.scheduler import Fetch, KnownBlob, NodeView, schedule
from orchestrator.scheduler.model import size_text
from tests.unit.test_scheduler import distributed

URL = "https://models.example/phi.gguf"
SHA, OTHER = "a" * 64, "b" * 64
MiB = 1024**2

ONE_REPLICA = f"""
models:
  - {{alias: phi, runtime: llama.cpp, source: "{URL}"}}
nodes:
  - {{id: n1}}
  - {{id: n2}}
  - {{id: n3}}
  - {{id: n4}}
"""


def view(node: str, site: str = "", blobs: frozenset[str] = frozenset()) -> NodeView:
    return NodeView(node, "ready", labels={"site": site} if site else {}, blobs=blobs)


def hosts(deployment_text: str, nodes: list[NodeView], known: dict[str, KnownBlob]) -> list[str]:
    result = schedule([distributed(deployment_text)], nodes, {}, known=known)
    return sorted(n for n, d in result.assignment.items() if d.models)


def test_a_node_holding_the_blob_is_preferred() -> None:
    nodes = [view("n1"), view("n2"), view("n3", blobs=frozenset({SHA})), view("n4")]
    assert hosts(ONE_REPLICA, nodes, {URL: KnownBlob(SHA, 5 * MiB)}) == ["n3"]
    # Without knowing the source's hash, nothing tells the nodes apart: the node id does.
    assert hosts(ONE_REPLICA, nodes, {}) == ["n1"]


def test_then_a_node_in_the_site_of_a_holder() -> None:
    nodes = [
        view("n1", "shop-a"),
        view("n2", "shop-b"),
        view("n3", "shop-b", blobs=frozenset({OTHER})),
        view("n4", "shop-b", blobs=frozenset({SHA})),
    ]
    nodes[3] = NodeView(
        "n4", "ready", labels={"site": "shop-b"}, blobs=frozenset({SHA}), cordoned=True
    )
    assert hosts(ONE_REPLICA, nodes, {URL: KnownBlob(SHA)}) == ["n2"]


def test_a_model_ready_on_a_node_still_wins_over_a_held_blob() -> None:
    nodes = [
        view("n1", blobs=frozenset({SHA})),
        NodeView("n2", "ready", ready_models=frozenset({"phi"})),
    ]
    assert hosts(ONE_REPLICA, nodes, {URL: KnownBlob(SHA)}) == ["n2"]


def test_the_plan_says_what_each_node_must_fetch() -> None:
    text = ONE_REPLICA.replace("{id: n1}", "{id: n1, models: [phi]}").replace(
        "{id: n2}", "{id: n2, models: [phi]}"
    )
    nodes = [view("n1", blobs=frozenset({SHA})), view("n2"), view("n3"), view("n4")]
    result = schedule([distributed(text)], nodes, {}, known={URL: KnownBlob(SHA, 135 * MiB)})
    loads = {s.node: s.fetch for s in result.plan.steps if s.action == "load-model"}
    assert loads == {"n1": None, "n2": Fetch(135 * MiB)}
    assert str(loads["n2"]) == "fetch 135.0 MiB"
    unknown = schedule([distributed(text)], nodes, {})
    fetches = [str(s.fetch) for s in unknown.plan.steps if s.fetch is not None]
    assert fetches == ["fetch (size unknown)", "fetch (size unknown)"]


def test_a_local_source_needs_no_fetch() -> None:
    text = ONE_REPLICA.replace(f'"{URL}"', '"/models/phi.gguf"')
    result = schedule([distributed(text)], [view("n1")], {})
    assert [s.fetch for s in result.plan.steps if s.action == "load-model"] == [None]


def test_a_learned_hash_fills_models_without_a_pin_and_never_replaces_a_pin() -> None:
    known = {URL: KnownBlob(SHA, 7)}
    result = schedule([distributed(ONE_REPLICA)], [view("n1")], {}, known=known)
    want = result.assignment["n1"].models[0]
    assert (want.sha256, want.size_bytes) == (SHA, 7)
    pinned = ONE_REPLICA.replace(f'source: "{URL}"', f'source: "{URL}", sha256: "{OTHER}"')
    result = schedule([distributed(pinned)], [view("n1")], {}, known=known)
    want = result.assignment["n1"].models[0]
    assert (want.sha256, want.size_bytes) == (OTHER, 0)


def test_two_deployments_must_not_disagree_on_a_hash() -> None:
    first = ONE_REPLICA.replace(f'source: "{URL}"', f'source: "{URL}", sha256: "{SHA}"')
    second = first.replace(SHA, OTHER)
    with pytest.raises(PlacementError, match="sha256"):
        schedule([distributed(first, "a"), distributed(second, "b")], [view("n1")], {})


def test_sizes_read_for_people() -> None:
    assert [size_text(n) for n in (512, 1536, int(135.2 * MiB))] == [
        "512 B",
        "1.5 KiB",
        "135.2 MiB",
    ]
