"""The data plane's replica directory, answered from the controller's fleet and assignment.

A replica counts when the controller assigned it to a node that is ready and that
reports it ready: a node back from a partition may still run an agent that moved
away (superseded) until it hears of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edgefleet.v1 import common_pb2
from edgefleet_contract.desired import NodeDesired
from edgefleet_contract.routing import TargetKind
from edgefleet_dataplane.replicas import Candidate, NodeStub
from orchestrator.fleet.fleet import Fleet


def candidates(
    fleet: Fleet, assignment: Mapping[str, NodeDesired], target: str, kind: TargetKind
) -> list[Candidate]:
    """Ready replicas of `target`, by node id."""
    found = []
    for node, desired in sorted(assignment.items()):
        assigned = desired.agents if kind == "agent" else desired.models
        if not any(_name(item, kind) == target for item in assigned):
            continue
        link = fleet.get(node)
        if link is None or link.health != "ready" or link.status is None:
            continue
        reported = link.status.agents if kind == "agent" else link.status.models
        ready = common_pb2.AGENT_STATE_READY if kind == "agent" else common_pb2.MODEL_STATE_READY
        for item in reported:
            if _name(item, kind) == target and item.state == ready:
                found.append(Candidate(node, desired.generation, int(item.queue_depth)))
                break
    return found


def _name(item: Any, kind: TargetKind) -> str:
    """The name of an agent, or the alias of a model (in a desired state or a status)."""
    return str(item.name if kind == "agent" else item.alias)


class FleetReplicaDirectory:
    """Where the replicas are, as the controller knows: a `ReplicaDirectory`."""

    def __init__(self, fleet: Fleet, assignment: Callable[[], Mapping[str, NodeDesired]]) -> None:
        """`assignment()` gives what each node is assigned now, by node id."""
        self._fleet = fleet
        self._assignment = assignment

    def ready(self, target: str, kind: TargetKind) -> list[Candidate]:
        """The ready replicas of an agent or a model alias, by node id."""
        return candidates(self._fleet, self._assignment(), target, kind)

    def stub(self, node_id: str) -> NodeStub | None:
        """The node's API on its link's current channel; None while it has none."""
        link = self._fleet.get(node_id)
        if link is None:
            return None
        stub: NodeStub | None = link.stub
        return stub

    def moved(self, target: str, kind: TargetKind, node_id: str) -> None:
        """Nothing to forget: the controller offers only what its current assignment
        places and the node reports ready, so a refusal is a moment's lag that its next
        status report ends."""
