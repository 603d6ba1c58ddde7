"""One cluster CA for a whole test run, so tests run their fleets in secure mode.

Controllers started by the tests get this CA in their data folder (`pki/ca.*`),
and nodes get a certificate from it for their id (`pki/node.*`), as if they had
joined with a token: real mutual TLS between every controller and node, in
whatever order a test starts them. Joining itself is tested on its own
(`tests/integration/test_trust.py`). Test clients that talk to a node directly
present a controller certificate from the same CA.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc

from edgefleet_common.grpc_transport import client_options
from edgefleet_common.pki import (
    Credentials,
    key_pem,
    load_csr,
    new_key,
    node_csr,
    node_server_name,
)
from orchestrator.trust.ca import ClusterCa

CLUSTER = "default"
NODE_CERT_LIFETIME = timedelta(days=2)


@functools.cache
def _home() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="edgefleet-test-pki-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def test_ca() -> ClusterCa:
    """The run's CA (made on first use)."""
    return ClusterCa.load_or_create(_home() / "ca", CLUSTER)


@functools.cache
def controller_identity() -> Credentials:
    """A controller certificate from the run's CA (what test clients present to nodes)."""
    return test_ca().controller_credentials(_home() / "client")


def seed_controller(data_dir: Path) -> None:
    """Give a controller's data folder the run's CA (before it starts)."""
    test_ca()  # made on first use
    folder = data_dir / "pki"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("ca.key", "ca.crt"):
        target = folder / name
        if not target.exists():
            shutil.copy2(_home() / "ca" / name, target)
            target.chmod(0o600)


def seed_node(data_dir: Path, node_id: str) -> None:
    """Give a node's data folder a certificate for `node_id` from the run's CA."""
    folder = data_dir / "pki"
    if (folder / "node.crt").exists():
        return
    key = new_key()
    issued = test_ca().issue_node(load_csr(node_csr(key, node_id)), node_id, NODE_CERT_LIFETIME)
    Credentials(key_pem=key_pem(key), cert_pem=issued.pem, ca_pem=test_ca().cert_pem).save(
        folder, "node"
    )


def _credentials() -> grpc.ChannelCredentials:
    identity = controller_identity()
    return grpc.ssl_channel_credentials(
        root_certificates=identity.ca_pem,
        private_key=identity.key_pem,
        certificate_chain=identity.cert_pem,
    )


def node_options(node_id: str, extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """Channel options for a node: the fleet's keepalive, its id as the TLS name, `extra`."""
    name = node_server_name(node_id)
    return [*client_options(), ("grpc.ssl_target_name_override", name), *extra]


def node_channel(node_id: str, address: str) -> grpc.Channel:
    """A blocking mTLS channel to node `node_id`, as the controller would open it."""
    return grpc.secure_channel(address, _credentials(), options=node_options(node_id))


def node_aio_channel(
    node_id: str, address: str, extra: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """An asyncio mTLS channel to node `node_id` (with `extra` channel options)."""
    return grpc.aio.secure_channel(address, _credentials(), options=node_options(node_id, extra))
