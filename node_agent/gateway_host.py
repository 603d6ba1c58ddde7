"""The OpenAI-compatible gateway every edge-node serves: the data plane on the box.

The same gateway as the controller's (`edgefleet_dataplane`), routing from the
node's own routing table: a replica on this node first, called in process; then
peers over mutual TLS. On loopback (the default, `127.0.0.1:7480`) it asks
nothing of the box's own apps. Bound elsewhere it serves HTTPS with the node's
cluster certificate (taken again when it is renewed) and admits only
`Authorization: Bearer KEY` with a key the routing table lists; a node run
`--insecure` serves plain HTTP with no key there, and says so.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgefleet_common.pki import Credentials
from edgefleet_common.ports import is_loopback
from edgefleet_contract.desired import NodeDesired
from edgefleet_contract.routing import RoutingIndex
from edgefleet_contract.routing_table import RoutingTable
from edgefleet_dataplane.escalation import Escalator
from edgefleet_dataplane.gateway import OpenAiGateway
from edgefleet_dataplane.http_server import HttpServer
from edgefleet_dataplane.router import Router
from node_agent.gateway_keys import TableKeys
from node_agent.local_stub import LocalStub, NodeHandlers
from node_agent.node_directory import LocalReplica, NodeReplicaDirectory, gateway_index
from node_agent.node_trust import ServingCredentials
from node_agent.peer_channels import PeerChannels

log = logging.getLogger(__name__)


def gateway_tls(serving: ServingCredentials, folder: Path) -> ssl.SSLContext:
    """HTTPS with the node's cluster certificate; a renewed one serves the next handshake."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, serving.current, folder)
    serving.on_replace(lambda renewed: _load(context, renewed, folder))
    return context


def _load(context: ssl.SSLContext, credentials: Credentials, folder: Path) -> None:
    # The ssl module reads certificates from files only: a private one, gone once read.
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, path = tempfile.mkstemp(dir=folder, prefix=".gateway-", suffix=".pem")  # 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(credentials.cert_pem + credentials.key_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)


def url_host(listen_host: str, advertised: str) -> str:
    """The host of the gateway's URL: the listen address, or for a wildcard one the
    address the node advertises."""
    host = advertised if listen_host in ("", "0.0.0.0", "::") else listen_host
    return f"[{host}]" if ":" in host else host


class NodeGateway:
    """The node's gateway: router, peer channels and HTTP server."""

    def __init__(
        self,
        node_id: str,
        host: str,
        table: Callable[[], RoutingTable],
        desired: Callable[[], NodeDesired],
        local: LocalReplica,
        handlers: NodeHandlers,
        serving: ServingCredentials | None,
    ) -> None:
        """`host`: the address it will listen on; `table()` and `desired()` give the
        node's routing table and desired state; `local` its ready replicas; `handlers` its
        servicer (called in process); `serving` its certificate (None: `--insecure`)."""
        self._node_id = node_id
        self._host = host
        self._table = table
        self._desired = desired
        self._serving = serving
        self._index_of: tuple[RoutingTable, NodeDesired, RoutingIndex] | None = None
        self.peers = PeerChannels(serving)
        directory = NodeReplicaDirectory(
            node_id, table, local, LocalStub(node_id, handlers), self.peers
        )
        self.router = Router(directory, self.index)
        self.escalator = Escalator()  # the API keys of endpoints: this node's environment
        self.exposed = not is_loopback(f"{host}:0")
        """Listening beyond loopback: HTTPS with API keys (unless `--insecure`)."""
        self.secure = self.exposed and serving is not None
        keys = TableKeys(table) if self.secure else None
        self.api = OpenAiGateway(self.router, self.index, self.escalator, keys)
        """The HTTP handler (`api.handle`)."""
        self._server: HttpServer | None = None
        self.url = ""
        """`SCHEME://HOST:PORT/v1` once serving."""
        self.port = 0
        self.scheme = "http"

    def index(self) -> RoutingIndex:
        """The routing index in use (made again only when the table or the state changes)."""
        table, desired = self._table(), self._desired()
        made = self._index_of
        if made is None or made[0] is not table or made[1] is not desired:
            made = self._index_of = (table, desired, gateway_index(table, desired, self._node_id))
        return made[2]

    async def start(self, port: int, advertised: str, pki: Path) -> bool:
        """Serve on its host and `port`. `advertised` names this node in the URL for a
        wildcard address; `pki` is where the node keeps its certificate. False (logged)
        when the address cannot be taken: the node serves without a gateway, and its
        replicas stay reachable through the others."""
        host = self._host
        if self.exposed and not self.secure:
            log.warning(
                "INSECURE: the gateway listens beyond loopback with plain HTTP and asks no "
                f"API key; anyone who reaches {host}:{port} can use this node's agents"
            )
        server = HttpServer(self.api.handle)
        try:
            tls = gateway_tls(self._serving, pki) if self._serving and self.secure else None
            self.port = await server.start(host, port, tls)
        except OSError as exc:
            await server.close()
            log.error(
                "cannot serve the gateway", extra={"listen": f"{host}:{port}", "error": str(exc)}
            )
            return False
        self._server = server
        self.scheme = "https" if tls is not None else "http"
        self.url = f"{self.scheme}://{url_host(host, advertised)}:{self.port}/v1"
        log.info("node gateway serving", extra={"gateway": self.url, "api_keys": self.secure})
        return True

    def routes_changed(self, table: RoutingTable) -> None:
        """A new routing table: channels to peers it no longer names close."""
        self.peers.retain({r.node_id for t in table.targets for r in t.replicas})

    async def close(self) -> None:
        """Stop serving, then close the channels to peers and to escalation endpoints."""
        if self._server is not None:
            await self._server.close()
        await self.peers.close()
        await self.escalator.close()
