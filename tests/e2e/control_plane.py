"""What the control-plane-loss tests and benchmark read from a lab fleet: the nodes' own
reports of what runs (to prove nothing restarted or was placed twice), whether every node
routes with the controller's current table, and gRPC stubs with a chosen certificate.

Used by `tests/e2e/test_control_plane_loss.py` and `bench/control_plane_loss.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import httpx2

from edgefleet.v1 import controller_pb2, node_pb2_grpc
from tests.cluster_pki import node_options
from tests.cluster_pki import test_ca as run_ca
from tests.e2e.gateway_tls import node_gateway_client
from tests.e2e.lab_fleet import AGENT, NODES, READY, LabFleet
from tests.polling import wait_for

PREFERRED = {"n1", "n2"}
"""Where the manifest places the agent."""
RESTART_REASONS = {
    "AgentStarting",
    "AgentStopping",
    "AgentUpdating",
    "ModelLoading",
    "ModelUnloading",
    "ModelEvicting",
}
"""Events that would mean a controller restart started, stopped or replaced work."""

Fingerprint = tuple[set[int], dict[str, int]]


def fingerprints(fleet: LabFleet) -> dict[str, Fingerprint]:
    """Per node: its llama.cpp server pids and its agents' request counters, as it reports
    them. A restarted model changes the pids; a restarted agent resets its counter."""
    prints: dict[str, Fingerprint] = {}
    for name, node in fleet.nodes.items():
        servers = {p.pid for p in node.runtime_servers()}
        counters = {a.name: a.requests_total for a in fleet.node_status(name).agents}
        prints[name] = servers, counters
    return prints


def holders(fleet: LabFleet) -> set[str]:
    """The nodes that themselves report the agent ready; fails if one reports it twice."""
    found = set()
    for name in fleet.nodes:
        agents = [a for a in fleet.node_status(name).agents if a.name == AGENT]
        assert len(agents) <= 1, f"{name} reports {AGENT} {len(agents)} times: {agents}"
        if agents and agents[0].state == READY:
            found.add(name)
    return found


def current_generation(fleet: LabFleet) -> int:
    """The generation of the routing table the controller pushes now."""
    reply = fleet.api.ListEndpoints(controller_pb2.ListEndpointsRequest(), timeout=5)
    return int(reply.routes_generation)


def routes_current(fleet: LabFleet) -> bool:
    """True when every running node says it routes with the controller's current table."""
    current = current_generation(fleet)
    reported = {n: fleet.node_status(n).routes_generation for n in fleet.nodes}
    return current > 0 and all(g == current for g in reported.values())


def key_in_force(fleet: LabFleet, name: str, key: str) -> bool:
    """True when node `name`'s gateway accepts `key`."""
    with node_gateway_client(name, timeout=5) as client:
        try:
            reply = client.get(
                f"{fleet.node_gateway_url(name)}/models",
                headers={"Authorization": f"Bearer {key}"},
            )
        except httpx2.HTTPError:
            return False
    return reply.status_code == 200


def wait_key_in_force(fleet: LabFleet, key: str, names: tuple[str, ...] = NODES) -> None:
    """Until every node's gateway accepts `key` (its table lists the key's digest)."""
    wait_for(
        "the API key in force on every node's gateway",
        lambda: all(key_in_force(fleet, n, key) for n in names),
        60,
        fleet.explain,
    )


@contextlib.contextmanager
def stub_as(
    node_id: str, address: str, key: bytes, certificate: bytes
) -> Iterator[node_pb2_grpc.NodeServiceStub]:
    """A stub on node `node_id` that presents `certificate` (trusting the run's CA to check
    the node's own): a peer node of the cluster, or someone else."""
    credentials = grpc.ssl_channel_credentials(run_ca().cert_pem, key, certificate)
    with grpc.secure_channel(address, credentials, options=node_options(node_id)) as channel:
        yield node_pb2_grpc.NodeServiceStub(channel)
