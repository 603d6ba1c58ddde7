"""The routing table's content, from what the controller knows: a pure function.

For every agent and model alias of the current deployments, the replicas that
are assigned to a ready node and that the node reports ready, with that node's
API address and the generation of its assignment; the routing index; the
digests of the gateway API keys in force. Numbering the result (a generation)
is the publisher's business, not this module's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgefleet_contract.desired import NodeDesired
from edgefleet_contract.routing import RoutingIndex, TargetKind
from edgefleet_contract.routing_table import ReplicaRoute, RoutingTable, TargetRoutes
from orchestrator.store.credentials import CredentialRow


@dataclass(frozen=True, slots=True)
class ReadyNode:
    """A ready node as the routing table needs it."""

    address: str
    """HOST:PORT the controller reaches the node's API at (peers use the same)."""
    agents: frozenset[str] = frozenset()
    """The agents it reports ready."""
    models: frozenset[str] = frozenset()
    """The model aliases it reports ready."""


def keys_in_force(rows: Iterable[CredentialRow], now: float) -> tuple[str, ...]:
    """The SHA-256 digests of the API keys usable now (not revoked, not expired), sorted."""
    return tuple(
        sorted({r.secret_sha256 for r in rows if r.kind == "api-key" and r.usable(now) is None})
    )


def routes_content(
    assignment: Mapping[str, NodeDesired],
    nodes: Mapping[str, ReadyNode],
    index: RoutingIndex,
    key_digests: Iterable[str],
) -> RoutingTable:
    """The table (generation 0, no sender) for these inputs; `nodes` holds the ready nodes
    by id. The same inputs give the same `content_key()`, whatever their order."""
    targets: list[TargetRoutes] = []
    seen: set[tuple[str, TargetKind]] = set()
    for deployment in index.deployments:
        names: list[tuple[str, TargetKind]] = [(a.name, "agent") for a in deployment.agents]
        names += [(m.alias, "model") for m in deployment.models]
        for name, kind in names:
            if (name, kind) in seen:
                continue
            seen.add((name, kind))
            replicas = _ready_replicas(assignment, nodes, name, kind)
            targets.append(TargetRoutes(name=name, kind=kind, replicas=replicas))
    return RoutingTable(
        index=index, targets=tuple(targets), api_key_digests=tuple(sorted(set(key_digests)))
    )


def _ready_replicas(
    assignment: Mapping[str, NodeDesired],
    nodes: Mapping[str, ReadyNode],
    name: str,
    kind: TargetKind,
) -> tuple[ReplicaRoute, ...]:
    """The replicas of one target, by node id: assigned there, and ready there."""
    found = []
    for node_id in sorted(assignment):
        desired = assignment[node_id]
        node = nodes.get(node_id)
        if node is None:
            continue
        if kind == "agent":
            assigned = any(a.name == name for a in desired.agents)
            ready = name in node.agents
        else:
            assigned = any(m.alias == name for m in desired.models)
            ready = name in node.models
        if assigned and ready:
            found.append(
                ReplicaRoute(node_id=node_id, address=node.address, generation=desired.generation)
            )
    return tuple(found)
