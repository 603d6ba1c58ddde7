"""A model's `parallel` and `context` from the manifest reach the node's desired state."""

from __future__ import annotations

from edgefleet_contract.desired import ModelWant
from orchestrator.manifest import DesiredState
from orchestrator.scheduler import schedule
from tests.unit.test_scheduler import distributed, ready


def wants_on(deployments: list[DesiredState], node: str) -> dict[str, ModelWant]:
    """The models one ready node is given, by alias."""
    result = schedule(deployments, ready(node), {})
    return {m.alias: m for m in result.assignment[node].models}


def test_the_manifests_slots_travel_in_the_models_want_and_zero_means_the_catalog() -> None:
    fleet = distributed(
        """
models:
  - {alias: smol, runtime: llama.cpp, parallel: 8, context: 4096}
  - {alias: plain, runtime: llama.cpp}
nodes: [{id: edge-1, agents: [], models: [smol, plain]}]
"""
    )
    wants = wants_on([fleet], "edge-1")
    assert (wants["smol"].parallel, wants["smol"].context) == (8, 4096)
    assert (wants["plain"].parallel, wants["plain"].context) == (0, 0)


def test_slots_one_deployment_leaves_out_come_from_the_one_that_sets_them() -> None:
    sets = distributed(
        """
models: [{alias: smol, parallel: 2}]
nodes: [{id: edge-1, agents: [], models: [smol]}]
""",
        name="b-sets",
    )
    leaves = distributed(
        """
models: [{alias: smol, context: 1024}]
nodes: [{id: edge-1, agents: [], models: [smol]}]
""",
        name="a-leaves",
    )
    smol = wants_on([sets, leaves], "edge-1")["smol"]
    assert (smol.parallel, smol.context) == (2, 1024)
