"""Who may call what on a node: the role a client certificate names, and the method table.

Certificates come from the test run's cluster CA (`tests.cluster_pki`), as real
ones; the TLS handshake itself (another cluster's certificate fails it) is tested
with real processes in tests/integration/test_trust.py and test_node_gateway.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from edgefleet.v1 import node_pb2
from edgefleet_common.pki import (
    NODE_URI_PREFIX,
    cert_pem,
    load_csr,
    new_key,
    node_csr,
    now,
    self_signed,
)
from node_agent.caller_roles import PEER_METHODS, cached_role_of, refusal, role_of
from tests import cluster_pki
from tests.cluster_pki import controller_identity

SERVICE = "/edgefleet.v1.NodeService/"
METHODS = [m.name for m in node_pb2.DESCRIPTOR.services_by_name["NodeService"].methods]
REQUESTS = {"InvokeAgent", "InvokeAgentUnary", "ProxyModel", "FetchBlob"}


def node_cert(node_id: str) -> bytes:
    issued = cluster_pki.test_ca().issue_node(
        load_csr(node_csr(new_key(), node_id)), node_id, timedelta(hours=1)
    )
    return issued.pem


def test_the_certificate_names_the_role() -> None:
    assert role_of([controller_identity().cert_pem]) == ("controller", "the controller")
    assert role_of([node_cert("kiosk-2")]) == ("node", "node `kiosk-2`")
    # What is not a certificate is skipped; a later one still counts.
    assert role_of([b"not a certificate", node_cert("kiosk-3")]) == ("node", "node `kiosk-3`")
    assert role_of([]) is None


def test_the_remembered_role_is_the_certificates_own() -> None:
    controller, node = controller_identity().cert_pem, node_cert("kiosk-4")
    for _ in range(2):  # the second time from the cache: the same answers
        assert cached_role_of((controller,)) == ("controller", "the controller")
        assert cached_role_of((node,)) == ("node", "node `kiosk-4`")
        assert cached_role_of(()) is None
    assert cached_role_of.cache_info().hits >= 3


def test_a_node_uri_without_the_node_name_the_ca_gives_is_no_role() -> None:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kiosk-9")])
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(NODE_URI_PREFIX + "kiosk-9")])
    start = now()
    forged = self_signed(key, name, start, start + timedelta(hours=1), [(san, False)])
    assert role_of([cert_pem(forged)]) is None


@pytest.mark.parametrize("method", METHODS)
def test_the_controller_may_call_every_method_and_a_node_only_requests(method: str) -> None:
    path = SERVICE + method
    assert refusal(("controller", "the controller"), path) is None
    as_peer = refusal(("node", "node `kiosk-2`"), path)
    if method in REQUESTS:
        assert as_peer is None
    else:
        assert as_peer is not None
        assert "node `kiosk-2`" in as_peer, as_peer
        assert f"{method} is for the cluster's controller" in as_peer, as_peer


def test_the_table_covers_every_method_and_refuses_an_unknown_caller() -> None:
    assert {p.removeprefix(SERVICE) for p in PEER_METHODS} == REQUESTS
    assert set(METHODS) > REQUESTS
    for commanding in ("ApplyState", "ApplyRoutes", "WatchStatus", "LoadModel", "UnloadModel"):
        assert commanding in METHODS
        assert refusal(("node", "node `x`"), SERVICE + commanding) is not None
    unknown = refusal(None, SERVICE + "InvokeAgent")
    assert unknown is not None
    assert "neither the controller nor a node" in unknown
    # Health checks and anything else off the node service: the controller's alone.
    assert refusal(("node", "node `x`"), "/grpc.health.v1.Health/Check") is not None
