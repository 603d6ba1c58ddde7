"""The fleet cache between real node processes: FetchBlob over mutual TLS.

Node A serves the model blobs it holds, or is fetching, to peers. What node B would
do is run here, in the test, with B's own certificate (from B's data folder): its
PeerSource streams the blob from A through the node's peer channels into a blob
store, which verifies it. A controller's certificate may fetch too; a certificate
of another cluster is refused in the TLS handshake.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgefleet.v1 import common_pb2, node_pb2, node_pb2_grpc
from edgefleet_common.pki import Credentials, key_pem, load_csr, new_key, node_csr
from node_agent.blobs import BlobStore, SourceError, fetch
from node_agent.blobs.peer_source import PeerSource
from node_agent.node_trust import ServingCredentials
from node_agent.peer_channels import PeerChannels
from orchestrator.trust.ca import ClusterCa
from tests import cluster_pki
from tests.blob_origin import Behaviour, BlobOrigin
from tests.cluster_pki import node_aio_channel
from tests.integration.node_process import NodeProcess, start_node, unique_id

pytestmark = pytest.mark.slow

SIZE = 1_500_000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hold(data_dir: Path, data: bytes) -> None:
    """Put `data` into the blob store of a node's data folder (before it starts)."""
    partial = BlobStore(data_dir / "blobs").partial(sha(data))
    partial.append(data)
    partial.finish(sha(data))


def peer_channels(node: NodeProcess) -> PeerChannels:
    """Peer channels with `node`'s own certificate, as its downloads use them."""
    credentials = Credentials.load(node.data_dir / "pki", "node")
    assert credentials is not None, f"no certificate in {node.data_dir}"
    return PeerChannels(ServingCredentials(credentials))


def foreign_credentials(folder: Path, node_id: str) -> Credentials:
    """A certificate for `node_id` from another cluster's CA, with this cluster's CA as
    the one it trusts (it could check the node; the node must refuse it)."""
    ca = ClusterCa.load_or_create(folder, "elsewhere")
    key = new_key()
    issued = ca.issue_node(load_csr(node_csr(key, node_id)), node_id, timedelta(hours=1))
    return Credentials(key_pem(key), issued.pem, cluster_pki.test_ca().cert_pem)


def run(scenario: Any, timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, timeout))


@pytest.mark.timeout(120)
def test_a_peer_fetches_a_held_blob_over_mutual_tls(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    hold(tmp_path / "a", data)
    with (
        start_node(unique_id("cache-a"), tmp_path / "a") as a,
        start_node(unique_id("cache-b"), tmp_path / "b") as b,
    ):

        async def as_peer() -> None:
            peers = peer_channels(b)
            store = BlobStore(tmp_path / "fetched")
            try:
                source = PeerSource(peers, a.node_id, a.address, sha256=sha(data))
                got = await fetch([source], store.partial(sha(data)), expected=sha(data))
                assert got == sha(data)
                lacking = PeerSource(peers, a.node_id, a.address, sha256="0" * 64)
                with pytest.raises(SourceError, match="does not hold the blob"):
                    await anext(lacking.chunks(0))
            finally:
                await peers.close()
            path = store.path(sha(data))
            assert path is not None, a.log()
            assert path.read_bytes() == data

        run(as_peer())

        async def as_controller() -> None:
            async with node_aio_channel(a.node_id, a.address) as channel:
                stub = node_pb2_grpc.NodeServiceStub(channel)
                request = node_pb2.FetchBlobRequest(sha256=sha(data), offset=SIZE - 1000)
                chunks = [chunk async for chunk in stub.FetchBlob(request, timeout=30)]
            assert b"".join(c.data for c in chunks) == data[-1000:]
            assert {(c.total, c.sha256) for c in chunks} == {(SIZE, sha(data))}

        run(as_controller())

        async def from_another_cluster() -> None:
            credentials = foreign_credentials(tmp_path / "other-ca", b.node_id)
            peers = PeerChannels(ServingCredentials(credentials))
            try:
                stub = peers.stub(a.node_id, a.address)
                request = node_pb2.FetchBlobRequest(sha256=sha(data))
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await anext(aiter(stub.FetchBlob(request, timeout=10)))
            finally:
                await peers.close()
            # Refused before any call: the handshake failed (no status the node chose).
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value

        run(from_another_cluster())
        assert "unexpected error" not in "\n".join(a.process.lines), a.log()


@pytest.mark.timeout(120)
def test_a_peer_follows_a_blob_the_node_is_downloading(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "m.gguf").write_bytes(data)
    origin = BlobOrigin(tmp_path / "www", Behaviour(rate_bps=SIZE // 3))
    with (
        start_node(unique_id("cache-a"), tmp_path / "a") as a,
        start_node(unique_id("cache-b"), tmp_path / "b") as b,
    ):

        async def scenario() -> None:
            url = f"{await origin.start()}/m.gguf"
            peers = peer_channels(b)
            store = BlobStore(tmp_path / "fetched")
            try:
                await want_model(a, url)
                # Asked by its source: A learns the hash only as its download finishes.
                source = PeerSource(peers, a.node_id, a.address, source=url)
                got = await fetch([source], store.partial(sha(data)), expected=sha(data))
                assert got == sha(data)
            finally:
                await peers.close()
                await origin.stop()

        run(scenario())
        path = BlobStore(tmp_path / "fetched").path(sha(data))
        assert path is not None, a.log()
        assert path.read_bytes() == data
        # B's bytes came from A: the origin sent the file once, to A.
        assert origin.bytes_served("/m.gguf") == SIZE, origin.log


async def want_model(node: NodeProcess, url: str) -> None:
    """Make a llama.cpp model from `url` part of the node's desired state (it downloads
    the blob before it tries to load it)."""
    model = common_pb2.ModelSpec(alias="cached", runtime="llama.cpp", source=url, tasks=["chat"])
    request = node_pb2.ApplyStateRequest(
        generation=1,
        controller_id="test-controller",
        leader_term=1,
        state=node_pb2.NodeDesiredState(models=[model]),
    )
    async with node.aio_channel() as channel:
        await node_pb2_grpc.NodeServiceStub(channel).ApplyState(request, timeout=10)
