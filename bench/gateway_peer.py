"""The `edgefleet-node-peer` target of bench/gateway.py: a node's gateway serving an alias
it holds no replica of, so every request goes to a peer node over mutual TLS gRPC.

The fleet is set up so that nothing else can happen: the node whose gateway is
called (the *front* node) is in the deployment with no model at all, and the
aliases are pinned to other nodes. A probe per route checks, from the
`X-EdgeFleet-Node` header, that a peer served it. The CPU that counts is the
front node's and the peers' (not their model servers').
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
from gateway_load import chat_body
from gateway_targets import EdgeFleetTarget, Route, Target, wait_ready

NAME = "edgefleet-node-peer"
SERVED_BY = "x-edgefleet-node"


@dataclass
class PeerTarget(Target):
    """A front node's gateway; closes `fleet` when it owns it."""

    fleet: EdgeFleetTarget | None = None

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.close()


def peer_gateway(
    edgefleet: EdgeFleetTarget,
    front: str,
    peers: Sequence[str],
    routes: Mapping[str, str],
    *,
    owns_fleet: bool = False,
    timeout: float = 60.0,
) -> PeerTarget:
    """`front`'s own gateway as a target (`routes`: route name → alias), once it lists every
    alias with a ready replica and a probe of each route was served by one of `peers`;
    RuntimeError otherwise. `owns_fleet`: closing the target closes `edgefleet`."""
    if front in peers:
        raise ValueError(f"the front node {front} cannot be one of its peers")
    base = edgefleet.node_gateways[front]
    wait_ready(base, dict.fromkeys(routes.values(), 1), timeout)
    by_id = {n.node_id: n for n in edgefleet.nodes}
    target = PeerTarget(
        NAME,
        {name: Route(f"{base}/chat/completions", alias) for name, alias in routes.items()},
        [by_id[front].pid, *(by_id[p].pid for p in peers)],
        fleet=edgefleet if owns_fleet else None,
    )
    for name, route in target.routes.items():
        served = served_by(route)
        if served not in peers:
            raise RuntimeError(
                f"{NAME} {name}: served by {served!r}, not by a peer of {front} ({peers})"
            )
    return target


def served_by(route: Route) -> str:
    """The `X-EdgeFleet-Node` of one whole answer on `route` (RuntimeError if it failed)."""
    answer = httpx.post(
        route.url,
        content=chat_body(route.model, False),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    if answer.status_code != 200:
        raise RuntimeError(f"{route.model}: HTTP {answer.status_code} {answer.text[:300]}")
    served: str = answer.headers.get(SERVED_BY, "")
    return served
