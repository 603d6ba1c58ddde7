"""The routing table: what a node's gateway needs to route without its controller.

The controller makes one table for the whole fleet — the routing index (every
deployment's agents, models, balancing and escalation), the ready replicas of
every target with their nodes' addresses, and the digests of the gateway API
keys in force — numbers it with a growing generation and pushes it to every
node. A node keeps the newest it was given on disk, so after a restart it routes
with what it last knew even while the controller is away.
"""

from __future__ import annotations

from pydantic import Field

from edgefleet_contract.frozen import Frozen
from edgefleet_contract.routing import RoutingIndex, TargetKind


class ReplicaRoute(Frozen):
    """One ready replica of a target, and how to reach its node."""

    node_id: str = Field(min_length=1, max_length=128)
    address: str = Field(min_length=1, max_length=300)
    """host:port of the node's API."""
    generation: int = Field(0, ge=0)
    """Of the node's assignment when the table was made: the node refuses a request sent
    with an older generation than the one the target was (re)assigned to it with."""


class TargetRoutes(Frozen):
    """Where an agent or a model alias is served."""

    name: str = Field(min_length=1, max_length=128)
    kind: TargetKind
    replicas: tuple[ReplicaRoute, ...] = ()


class RoutingTable(Frozen):
    """The fleet's routes at one generation."""

    generation: int = Field(0, ge=0)
    """0: no table yet. A node takes only a table newer than the one it has."""
    controller_id: str = ""
    index: RoutingIndex = RoutingIndex()
    targets: tuple[TargetRoutes, ...] = ()
    api_key_digests: tuple[str, ...] = ()
    """SHA-256 (hex) of the gateway API keys in force; a gateway that needs keys accepts
    only these."""

    def replicas(self, name: str, kind: TargetKind) -> tuple[ReplicaRoute, ...]:
        """The ready replicas of a target, as the controller last saw them."""
        for target in self.targets:
            if target.name == name and target.kind == kind:
                return target.replicas
        return ()

    def address(self, node_id: str) -> str | None:
        """The API address of a node that serves something in this table."""
        for target in self.targets:
            for replica in target.replicas:
                if replica.node_id == node_id:
                    return replica.address
        return None

    def content_key(self) -> str:
        """What the table says, without its generation or sender: two tables with the
        same key route the same way."""
        return self.model_dump_json(exclude={"generation", "controller_id"})
