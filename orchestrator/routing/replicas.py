"""Which nodes can serve a target (an agent or a model alias) right now."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from edgefleet.v1 import common_pb2
from node_agent.desired import NodeDesired
from orchestrator.fleet.fleet import Fleet

TargetKind = Literal["agent", "model"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node that can serve a target: ready, assigned it, and reporting it ready."""

    node_id: str
    generation: int
    """Of the node's assignment: the node refuses a request meant for an older one."""
    queue_depth: int = 0
    """Requests waiting for the target on that node, as it last reported."""


def candidates(
    fleet: Fleet, assignment: Mapping[str, NodeDesired], target: str, kind: TargetKind
) -> list[Candidate]:
    """Ready replicas of `target`, by node id.

    Only replicas the controller assigned count: a node back from a partition may
    still run an agent that moved away (superseded) until it hears of it.
    """
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
