"""Where the replicas of a target are and how to reach them: what the router asks its host.

The host that serves the data plane (the controller, or an edge-node) answers from
what it knows of the fleet; the router needs nothing else of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Protocol

from edgefleet.v1 import node_pb2
from edgefleet_contract.routing import TargetKind


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node that can serve a target: ready, assigned it, and reporting it ready."""

    node_id: str
    generation: int
    """Of the node's assignment: the node refuses a request meant for an older one."""
    queue_depth: int = 0
    """Requests waiting for the target on that node, as it last reported."""
    local: bool = False
    """The gateway's own node: served in process with no network hop, so it ranks first
    whatever the balancing strategy."""


class NodeStub(Protocol):
    """The calls of a node's API the router makes (a `NodeService` stub)."""

    def InvokeAgent(
        self, request: node_pb2.InvokeAgentRequest, timeout: float
    ) -> AsyncIterable[node_pb2.InvokeAgentChunk]:
        """Run an agent request; its chunks as they come."""
        ...

    def ProxyModel(
        self, request: node_pb2.ProxyModelRequest, timeout: float
    ) -> AsyncIterable[node_pb2.ProxyModelChunk]:
        """Send an OpenAI request to a loaded model; the runtime's response in chunks."""
        ...


class ReplicaDirectory(Protocol):
    """Which nodes can serve a target right now, and the way to each."""

    def ready(self, target: str, kind: TargetKind) -> list[Candidate]:
        """The ready replicas of an agent or a model alias, by node id."""
        ...

    def stub(self, node_id: str) -> NodeStub | None:
        """The API of a node; None while there is no channel to it (not connected yet,
        or reconnecting)."""
        ...

    def moved(self, target: str, kind: TargetKind, node_id: str) -> None:
        """A replica answered that it no longer serves the target there (it moved away,
        or was fenced by a newer generation): the directory may stop offering it until
        it knows better."""
        ...
