"""The fleet's OpenAI gateways as `ListEndpoints` returns them: the controller's own and
each node's, with the routing table generation each routes with."""

from __future__ import annotations

from collections.abc import Mapping

from edgefleet.v1 import controller_pb2
from orchestrator.fleet.fleet import Fleet
from orchestrator.fleet.node_link import NodeLink


def node_gateway(link: NodeLink, adverts: Mapping[str, str]) -> tuple[str, str]:
    """(base URL, where it came from) of a node's gateway: what the node says of itself,
    else its mDNS advert; ("", "") when neither tells."""
    if link.info is not None and link.info.gateway_url:
        return link.info.gateway_url, "node-info"
    advertised = adverts.get(link.node_id, "")
    return (advertised, "mdns") if advertised else ("", "")


def endpoints(
    fleet: Fleet, controller_url: str, routes_generation: int, adverts: Mapping[str, str]
) -> controller_pb2.ListEndpointsResponse:
    """The controller's gateway (when it serves one), then every node's, by id.

    `adverts` maps node ids to the gateway URL of their mDNS advert. A node that never
    said anything (no status yet, and not untrusted) is in state `unknown`.
    """
    found = []
    if controller_url:
        found.append(
            controller_pb2.Endpoint(
                name="controller",
                kind="controller",
                url=controller_url,
                url_source="controller",
                state="ready",
                routes_generation=routes_generation,
                routes_reported=True,
            )
        )
    for link in fleet.links():
        url, source = node_gateway(link, adverts)
        said = link.status is not None or link.health == "untrusted"
        found.append(
            controller_pb2.Endpoint(
                name=link.node_id,
                kind="node",
                url=url,
                url_source=source,
                state=fleet.state_of(link) if said else "unknown",
                routes_generation=link.routes_generation,
                routes_reported=link.status is not None,
                address=link.address,
            )
        )
    return controller_pb2.ListEndpointsResponse(
        endpoints=found, routes_generation=routes_generation
    )
