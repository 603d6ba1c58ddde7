"""EtcdClient over TLS with a client certificate, against an etcd that requires one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from orchestrator.etcd.client import EtcdClient
from orchestrator.etcd.errors import EtcdUnavailable
from orchestrator.etcd.target import EtcdTarget, parse_store_url

if TYPE_CHECKING:
    from tests.etcd_server import EtcdCluster

pytestmark = pytest.mark.slow


def test_a_tls_etcd_serves_a_client_with_its_certificate(etcd_tls: EtcdCluster) -> None:
    tls = etcd_tls.tls
    assert tls is not None
    target = parse_store_url(etcd_tls.url, ca=tls.ca, cert=tls.client_cert, key=tls.client_key)
    client = EtcdClient(target)
    try:
        revision = client.put(b"/tls/k", b"v")
        kv = client.get(b"/tls/k")
        assert kv is not None
        assert kv.mod_revision == revision
    finally:
        client.close()


def test_a_tls_etcd_refuses_a_client_without_a_certificate(etcd_tls: EtcdCluster) -> None:
    tls = etcd_tls.tls
    assert tls is not None
    anonymous = EtcdClient(EtcdTarget(etcd_tls.endpoints, ca=tls.ca), timeout=1.0)
    try:
        with pytest.raises(EtcdUnavailable, match="does not answer"):
            anonymous.get(b"/tls/k")  # the handshake fails without a client certificate
    finally:
        anonymous.close()
