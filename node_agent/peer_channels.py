"""Channels to peer nodes: mutual TLS with this node's own certificate, one per peer.

A node's gateway sends a request that it cannot serve itself to a peer's node API.
The channel presents this node's certificate (the peer admits a node's certificate
for requests only, see `caller_roles`) and checks that the peer's names the peer
(`ID.node.edgefleet.invalid`, whatever its address). Channels are made on first
use, with the fleet's keepalive (a cut link fails calls within ~2 s), and replaced
when the peer's address changes or this node's certificate is renewed; the old one
is closed once the requests on it are done. A node run `--insecure` talks plaintext
to peers that run the same way.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc

from edgefleet.v1 import node_pb2_grpc
from edgefleet_common.grpc_transport import client_options
from edgefleet_common.pki import Credentials, node_server_name
from node_agent.node_trust import ServingCredentials

log = logging.getLogger(__name__)

RETIRE_GRACE_S = 300.0
"""How long requests on a replaced channel may still run before it closes."""


@dataclass(slots=True)
class _Peer:
    address: str
    channel: Any
    """grpc.aio.Channel (grpcio ships no type information)."""
    stub: node_pb2_grpc.NodeServiceStub


class PeerChannels:
    """One lazily made channel to each peer node, by node id."""

    def __init__(self, serving: ServingCredentials | None) -> None:
        """`serving`: this node's certificate (None: plaintext, `--insecure`)."""
        self._serving = serving
        self._built_with: Credentials | None = serving.current if serving else None
        self._peers: dict[str, _Peer] = {}
        self._retiring: dict[asyncio.Task[None], Any] = {}
        """Replaced channels closing once their requests are done, by closing task."""

    def stub(self, node_id: str, address: str) -> node_pb2_grpc.NodeServiceStub:
        """The node API of peer `node_id` at `address` (a channel is made if needed)."""
        if self._serving is not None and self._serving.current is not self._built_with:
            # Renewed: new handshakes present the new certificate.
            self._built_with = self._serving.current
            for peer_id in list(self._peers):
                self._retire(peer_id)
        peer = self._peers.get(node_id)
        if peer is not None and peer.address != address:
            self._retire(node_id)
            peer = None
        if peer is None:
            channel = self._channel(node_id, address)
            peer = _Peer(address, channel, node_pb2_grpc.NodeServiceStub(channel))
            self._peers[node_id] = peer
        return peer.stub

    def retain(self, node_ids: set[str]) -> None:
        """Close (gracefully) the channels to peers not in `node_ids`."""
        for node_id in [n for n in self._peers if n not in node_ids]:
            self._retire(node_id)

    def _channel(self, node_id: str, address: str) -> Any:
        if self._serving is None:
            return grpc.aio.insecure_channel(address, options=client_options())
        own = self._serving.current
        credentials = grpc.ssl_channel_credentials(
            root_certificates=own.ca_pem, private_key=own.key_pem, certificate_chain=own.cert_pem
        )
        options = [*client_options(), ("grpc.ssl_target_name_override", node_server_name(node_id))]
        return grpc.aio.secure_channel(address, credentials, options=options)

    def _retire(self, node_id: str) -> None:
        peer = self._peers.pop(node_id)
        task = asyncio.get_running_loop().create_task(peer.channel.close(RETIRE_GRACE_S))
        self._retiring[task] = peer.channel
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def close(self) -> None:
        """Close every channel now (requests still on them end as cancelled)."""
        retiring, self._retiring = self._retiring, {}
        for task in retiring:
            task.cancel()
        await asyncio.gather(*retiring, return_exceptions=True)
        channels = [*retiring.values(), *(peer.channel for peer in self._peers.values())]
        self._peers.clear()
        for channel in channels:
            try:
                await channel.close()
            except Exception:  # closing must go on for the others
                log.exception("closing a peer channel failed")
