"""Who made a call, as a revision records it."""

from __future__ import annotations

from datetime import timedelta

from edgefleet_common.pki import admin_csr, load_csr, new_key, node_csr
from orchestrator.callers import caller_name
from tests import cluster_pki


class Context:
    def __init__(self, peer: str, pems: tuple[bytes, ...] = ()) -> None:
        self._peer, self._pems = peer, pems

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": list(self._pems)} if self._pems else {}


def test_plaintext_callers_are_named_by_where_they_are() -> None:
    assert caller_name(Context("ipv4:127.0.0.1:50123")) == "local"
    assert caller_name(Context("ipv6:[::1]:50123")) == "local"
    assert caller_name(Context("in-process:dashboard")) == "dashboard"
    assert caller_name(Context("ipv4:10.0.0.9:50123")) == "unauthenticated 10.0.0.9"


def test_a_certificate_names_its_holder() -> None:
    ca = cluster_pki.test_ca()
    node = ca.issue_node(load_csr(node_csr(new_key(), "kiosk-1")), "kiosk-1", timedelta(hours=1))
    # A node's certificate is no admin's: the call is then named by its address.
    assert caller_name(Context("ipv4:10.0.0.9:1", (node.pem,))) == "unauthenticated 10.0.0.9"
    alice = ca.issue_admin(load_csr(admin_csr(new_key(), "alice")), "alice")
    assert caller_name(Context("ipv4:10.0.0.9:1", (alice.pem,))) == "admin alice"
    controller = cluster_pki.controller_identity()
    assert caller_name(Context("ipv4:10.0.0.2:1", (controller.cert_pem,))) == "a controller"
