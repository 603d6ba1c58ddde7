"""Which nodes can serve a target (an agent or a model alias) right now."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from edgefleet.v1 import common_pb2
from node_agent.desired import NodeDesired
from orchestrator.fleet.fleet import Fleet

TargetKind = Literal["agent", "model"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node that can serve a target: ready, assigned it, and reporting it ready."""

    node_id: str
    address: str
    generation: int


def candidates(
    fleet: Fleet, assignment: Mapping[str, NodeDesired], target: str, kind: TargetKind
) -> list[Candidate]:
    """Ready replicas of `target`, by node id.

    Only replicas the controller assigned count: a node back from a partition may
    still run an agent that moved away (superseded) until it hears of it.
    """
    found = []
    for node, desired in assignment.items():
        names = (
            {a.name for a in desired.agents}
            if kind == "agent"
            else {m.alias for m in desired.models}
        )
        if target not in names:
            continue
        link = fleet.get(node)
        if link is None or link.health != "ready" or link.status is None:
            continue
        if kind == "agent":
            ready = any(
                a.name == target and a.state == common_pb2.AGENT_STATE_READY
                for a in link.status.agents
            )
        else:
            ready = any(
                m.alias == target and m.state == common_pb2.MODEL_STATE_READY
                for m in link.status.models
            )
        if ready:
            found.append(Candidate(node, link.address, desired.generation))
    return sorted(found, key=lambda c: c.node_id)


def target_kind(assignment: Mapping[str, NodeDesired], target: str) -> TargetKind | None:
    """Whether a name is an agent or a model alias of the current assignment."""
    for desired in assignment.values():
        if any(a.name == target for a in desired.agents):
            return "agent"
    for desired in assignment.values():
        if any(m.alias == target for m in desired.models):
            return "model"
    return None
