"""Where a node's gateway finds replicas: on this box first, then peers from the routing table.

The node knows its own replicas best: one it runs and reports ready is a candidate
(marked `local`, so it ranks first and is called in process) whatever the table
says, and one it does not run is never taken from the table. Peers come from the
controller's routing table, the hint of who is ready; the gateway judges them
itself (connection failures open their circuits, keepalive finds a cut link). A
node that never got a table routes only to itself, and its own agents and models
are always in its index, even before the table names them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edgefleet_contract.desired import NodeDesired
from edgefleet_contract.routing import (
    AgentRoute,
    DeploymentRoutes,
    ModelRoute,
    RoutingIndex,
    TargetKind,
)
from edgefleet_contract.routing_table import RoutingTable
from edgefleet_dataplane.replicas import Candidate, NodeStub
from node_agent.errors import NotFound
from node_agent.peer_channels import PeerChannels

if TYPE_CHECKING:
    from node_agent.daemon import Node

LocalReplica = Callable[[str, TargetKind], Candidate | None]
"""(target, kind) → this node's ready replica of it, if it has one."""


def local_replica(node: Node, target: str, kind: TargetKind) -> Candidate | None:
    """The node's replica of an agent or model alias when it is ready there (what its
    own gateway serves in process), at the node's current generation."""
    if kind == "agent":
        try:
            if node.agents.state(target)[0] != "ready":
                return None
        except NotFound:
            return None
    else:
        slot = node.models.slot(target)
        if slot is None or slot.state != "ready":
            return None
    load = node.admission.loads.get(target)
    waiting = load.waiting if load else 0
    return Candidate(node.config.node_id, node.desired.generation, waiting, local=True)


def local_deployment_name(node_id: str) -> str:
    """The deployment a node lists its own targets under when no table declares them."""
    return f"node/{node_id}"


def gateway_index(table: RoutingTable, desired: NodeDesired, node_id: str) -> RoutingIndex:
    """The table's routing index, plus this node's own agents and models that no
    deployment of the table declares (all of them, before any table came)."""
    index = table.index
    agents = tuple(
        AgentRoute(name=a.name, instructions=a.instructions)
        for a in desired.agents
        if index.kind_of(a.name) is None
    )
    models = tuple(
        ModelRoute(alias=m.alias, tasks=m.tasks)
        for m in desired.models
        if index.kind_of(m.alias) is None
    )
    if not agents and not models:
        return index
    own = DeploymentRoutes(name=local_deployment_name(node_id), agents=agents, models=models)
    return RoutingIndex(deployments=(*index.deployments, own))


class NodeReplicaDirectory:
    """The replicas a node's gateway may send a request to: a `ReplicaDirectory`."""

    def __init__(
        self,
        node_id: str,
        table: Callable[[], RoutingTable],
        local: LocalReplica,
        local_stub: NodeStub,
        peers: PeerChannels,
    ) -> None:
        """`table()` gives the routing table in use; `local` this node's ready replicas;
        `local_stub` calls this node in process."""
        self._node_id = node_id
        self._table = table
        self._local = local
        self._local_stub = local_stub
        self._peers = peers
        self._moved: dict[tuple[str, TargetKind, str], int] = {}
        """Peer replicas that refused as moved or fenced, with the table generation they
        refused under: not offered again until a newer table comes."""

    def ready(self, target: str, kind: TargetKind) -> list[Candidate]:
        """This node's replica if it is ready, then the table's others, by node id."""
        found: list[Candidate] = []
        own = self._local(target, kind)
        if own is not None:
            found.append(own)
        table = self._table()
        peers = {
            r.node_id: r
            for r in table.replicas(target, kind)
            # What this node runs, it knows better; what refused as moved stays out
            # until the table changes.
            if r.node_id != self._node_id
            and self._moved.get((target, kind, r.node_id)) != table.generation
        }
        found += [Candidate(node, peers[node].generation) for node in sorted(peers)]
        return found

    def moved(self, target: str, kind: TargetKind, node_id: str) -> None:
        """A peer said it no longer serves the target: leave it out while this table
        lasts (its own replica, the node knows directly)."""
        if node_id == self._node_id:
            return
        generation = self._table().generation
        # What was refused under an older table is of no use any more.
        self._moved = {k: g for k, g in self._moved.items() if g == generation}
        self._moved[(target, kind, node_id)] = generation

    def stub(self, node_id: str) -> NodeStub | None:
        """This node in process, or a peer over mutual TLS; None for a node the table no
        longer names."""
        if node_id == self._node_id:
            return self._local_stub
        address = self._table().address(node_id)
        if address is None:
            return None
        stub: NodeStub = self._peers.stub(node_id, address)
        return stub
