"""The controller's side of cluster trust, in one place: its CA, its own client certificate,
the join tokens and API keys, the join endpoint, and the mTLS channels to nodes.

Files in the data folder: `pki/ca.key` + `pki/ca.crt` (the CA), `pki/controller.*`
(the controller's client certificate) and `join-token` (a token made on first
start, 0600, for the operator to copy to new boxes).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc

from edgefleet.v1 import trust_pb2_grpc
from edgefleet_common.grpc_transport import client_options, server_options
from edgefleet_common.pki import Credentials, node_server_name, write_private
from orchestrator.events import EventLog
from orchestrator.store import StateStore
from orchestrator.trust.ca import DEFAULT_NODE_CERT_LIFETIME, ClusterCa
from orchestrator.trust.credential_book import CredentialBook
from orchestrator.trust.join_service import JoinService

log = logging.getLogger(__name__)

TOKEN_FILE = "join-token"
GATEWAY_CERT_LIFETIME = timedelta(days=365)
JOIN_MAX_REQUEST = 64 * 1024
PKI_DIR = "pki"
CA_SETTING = "cluster-ca"
"""The setting that carries the CA (certificate and key) in a store shared by several
controllers; protect that store (etcd with TLS and client certificates)."""


class ClusterTrust:
    """What the controller trusts and how it proves who it is."""

    def __init__(
        self,
        data_dir: Path,
        store: StateStore,
        *,
        node_cert_lifetime: timedelta = DEFAULT_NODE_CERT_LIFETIME,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        if store.health().kind != "sqlite":
            share_ca(data_dir / PKI_DIR, store)
        self.ca = ClusterCa.load_or_create(data_dir / PKI_DIR, store.cluster_name)
        self.identity: Credentials = self.ca.controller_credentials(data_dir / PKI_DIR)
        self.book = CredentialBook(store, self.ca.fingerprint)
        self.node_cert_lifetime = node_cert_lifetime
        self._channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca.cert_pem,
            private_key=self.identity.key_pem,
            certificate_chain=self.identity.cert_pem,
        )

    @property
    def token_file(self) -> Path:
        """Where the first join token is kept for the operator."""
        return self.data_dir / TOKEN_FILE

    def ensure_token_file(self) -> Path:
        """Make a join token and write it to `join-token` (0600) unless that file exists."""
        if not self.token_file.is_file():
            _, token = self.book.create("join-token", "made on first start")
            write_private(self.token_file, f"{token}\n".encode())
        return self.token_file

    def node_channel(self, node_id: str, address: str) -> Any:
        """An mTLS channel to a node: its certificate must be this CA's and name `node_id`."""
        options = [*client_options(), ("grpc.ssl_target_name_override", node_server_name(node_id))]
        return grpc.aio.secure_channel(address, self._channel_credentials, options=options)

    def gateway_tls(self, host: str) -> ssl.SSLContext:
        """HTTPS for the gateway on `host`: a certificate from the cluster CA naming it (or,
        for a wildcard address, this machine's name and addresses), kept in `pki/gateway.*`."""
        hosts = [host] if host not in ("0.0.0.0", "::", "") else _local_names()
        credentials = self.ca.server_credentials(hosts, GATEWAY_CERT_LIFETIME)
        folder = self.data_dir / PKI_DIR
        write_private(folder / "gateway.key", credentials.key_pem)
        write_private(folder / "gateway.crt", credentials.cert_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(folder / "gateway.crt", folder / "gateway.key")
        return context

    def revoked(self) -> dict[str, str]:
        """Revoked node id → reason."""
        return self.store.revoked_nodes()

    async def serve_join(self, listen: str, events: EventLog, on_join: Any) -> tuple[Any, int]:
        """Start the join endpoint (TLS with the CA's certificate); (server, port)."""
        # Anyone may call this port: requests are a token and a signing request, small.
        options = [o for o in server_options() if o[0] != "grpc.max_receive_message_length"]
        options.append(("grpc.max_receive_message_length", JOIN_MAX_REQUEST))
        server = grpc.aio.server(options=options)
        trust_pb2_grpc.add_JoinServiceServicer_to_server(
            JoinService(
                self.ca, self.book, self.store, events, self.node_cert_lifetime, on_join=on_join
            ),
            server,
        )
        credentials = grpc.ssl_server_credentials(
            [(self.ca.key_pem, self.ca.cert_pem)],
            root_certificates=self.ca.cert_pem,
            require_client_auth=False,
        )
        port = server.add_secure_port(listen, credentials)
        if not port:
            raise OSError(f"cannot serve the join endpoint on {listen}: in use or not local")
        await server.start()
        return server, port


def share_ca(folder: Path, store: StateStore) -> None:
    """One CA for every controller of a shared store: the first to start puts its own
    there; the others take it (replacing any CA of their own, which signed nothing yet
    that the cluster knows)."""
    stored = store.get_setting(CA_SETTING)
    if stored is None:
        mine = ClusterCa.load_or_create(folder, store.cluster_name)
        offer = json.dumps({"cert": mine.cert_pem.decode(), "key": mine.key_pem.decode()})
        stored = store.set_setting_if_absent(CA_SETTING, offer)
    shared = json.loads(stored)
    cert, key = shared["cert"].encode(), shared["key"].encode()
    cert_path = folder / "ca.crt"
    if cert_path.is_file() and cert_path.read_bytes() == cert:
        return
    log.info("taking the cluster CA from the shared store", extra={"folder": str(folder)})
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(folder / "ca.key", key)
    write_private(cert_path, cert)


def _local_names() -> list[str]:
    """This machine's name, `localhost`, and its IPv4 addresses."""
    import psutil  # only needed for a gateway on every interface

    addresses = {
        a.address
        for entries in psutil.net_if_addrs().values()
        for a in entries
        if a.family == socket.AF_INET
    }
    return [socket.gethostname(), "localhost", *sorted(addresses)]
