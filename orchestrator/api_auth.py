"""The controller API off loopback: TLS that asks every caller for a certificate from the
cluster CA, and a guard that admits only admins and the controllers themselves.

TLS (`add_secure_api_port`) refuses a client without a certificate of this CA in the
handshake. The guard (`AdminGuard`) then reads who the certificate names: a
controller (`edgefleet://controller`) may call everything, an admin
(`edgefleet://admin/NAME`) everything unless its certificate is revoked, anyone else
(a node) nothing. A revocation is seen within `RECHECK_S`: the answer of the store
is kept that long per certificate. The gRPC health service stays open, so a client
can tell "not there" from "not admitted".
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import grpc

from edgefleet_common.grpc_checks import checked
from edgefleet_common.pki import PkiError, admin_name_of, is_controller, load_cert, node_id_of
from orchestrator.trust.admin_certs import LOCAL_ADMIN_CONFIG, make_admin_config
from orchestrator.trust.cluster_trust import ClusterTrust

RECHECK_S = 1.0
"""How long a certificate's revocation state is trusted before the store is asked again."""
API_CERT_LIFETIME = timedelta(days=365)
OPEN_SERVICES = ("/grpc.health.v1.Health/",)
HOW_TO_ADMIT = (
    "the controller API off loopback takes an admin certificate: on a controller box run "
    "`edgectl --config DATA_DIR/admin.conf admin create NAME`, then "
    "`edgectl --config NAME.edgefleet.yaml COMMAND`"
)

Kind = Literal["controller", "admin", "node", "unknown"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a client certificate names."""

    kind: Kind
    name: str
    serial: int


def caller_of(pems: Iterable[bytes]) -> Caller | None:
    """The caller named by the first certificate of the chain; None: no certificate."""
    for pem in pems:
        try:
            cert = load_cert(pem)
        except PkiError:
            return Caller("unknown", "", 0)
        serial = cert.serial_number
        if is_controller(cert):
            return Caller("controller", "", serial)
        admin = admin_name_of(cert)
        if admin is not None:
            return Caller("admin", admin, serial)
        node = node_id_of(cert)
        return Caller("node", node, serial) if node is not None else Caller("unknown", "", serial)
    return None


@functools.lru_cache(maxsize=256)
def cached_caller_of(pems: tuple[bytes, ...]) -> Caller | None:
    """`caller_of`, remembered per certificate chain (a function of its bytes alone)."""
    return caller_of(pems)


class AdminGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Admits each call by its client certificate: admins not revoked, and controllers."""

    def __init__(
        self,
        trust: ClusterTrust,
        *,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = trust.store
        self._recheck_s = recheck_s
        self._clock = clock
        self._revoked: dict[int, tuple[float, bool | None]] = {}

    def refusal(self, caller: Caller | None) -> tuple[grpc.StatusCode, str] | None:
        """Why `caller` may not call the controller API (code, message); None: it may."""
        if caller is None:
            return grpc.StatusCode.UNAUTHENTICATED, f"no client certificate: {HOW_TO_ADMIT}"
        if caller.kind == "controller":
            return None
        if caller.kind == "admin":
            revoked = self._is_revoked(caller.serial)
            if revoked is None:
                return grpc.StatusCode.UNAUTHENTICATED, (
                    f"the admin certificate of {caller.name} (serial {caller.serial:x}) was not "
                    f"issued by this cluster's controllers; {HOW_TO_ADMIT}"
                )
            if revoked:
                return grpc.StatusCode.UNAUTHENTICATED, (
                    f"the admin certificate of {caller.name} (serial {caller.serial:x}) is "
                    f"revoked; {HOW_TO_ADMIT}"
                )
            return None
        who = f"node `{caller.name}`" if caller.kind == "node" else "a certificate naming no one"
        return grpc.StatusCode.PERMISSION_DENIED, (
            f"{who} may not drive the controller API: {HOW_TO_ADMIT}"
        )

    def _is_revoked(self, serial: int) -> bool | None:
        now = self._clock()
        known = self._revoked.get(serial)
        if known is not None and now - known[0] < self._recheck_s:
            return known[1]
        if len(self._revoked) > 1024:
            self._revoked.clear()
        revoked = self._store.certificate_revoked(serial)
        self._revoked[serial] = (now, revoked)
        return revoked

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler

        async def check(request: Any, context: Any) -> None:
            pems = tuple(context.auth_context().get("x509_pem_cert") or ())
            refused = self.refusal(cached_caller_of(pems))
            if refused is not None:
                await context.abort(*refused)

        return checked(handler, check)


def api_server_credentials(trust: ClusterTrust, hosts: list[str]) -> grpc.ServerCredentials:
    """TLS for the controller API: a certificate from the cluster CA naming `hosts` (and the
    name edgectl checks), client certificates of the CA required."""
    credentials = trust.ca.api_server_credentials(hosts, API_CERT_LIFETIME)
    return grpc.ssl_server_credentials(
        [(credentials.key_pem, credentials.cert_pem)],
        root_certificates=trust.ca.cert_pem,
        require_client_auth=True,
    )


def add_secure_api_port(server: Any, listen: str, trust: ClusterTrust) -> int:
    """Listen on `listen` (HOST:PORT) with `api_server_credentials`; the port (0: failed)."""
    return int(server.add_secure_port(listen, api_server_credentials(trust, listen_hosts(listen))))


def listen_hosts(listen: str) -> list[str]:
    """The names a server on `listen` answers to: its host, or for a wildcard address this
    machine's name, `localhost` and its IPv4 addresses."""
    host = listen.rpartition(":")[0].strip("[]")
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    import psutil  # only needed for an API on every interface

    addresses = {
        a.address
        for entries in psutil.net_if_addrs().values()
        for a in entries
        if a.family == socket.AF_INET
    }
    return [socket.gethostname(), "localhost", *sorted(addresses)]


def reachable_address(address: str) -> str:
    """`address` (HOST:PORT), with a wildcard host replaced by 127.0.0.1 (for this box)."""
    host, _, port = address.rpartition(":")
    try:
        wildcard = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        wildcard = host == ""
    return f"127.0.0.1:{port}" if wildcard else address


def write_local_admin_config(trust: ClusterTrust, address: str) -> Path:
    """`DATA_DIR/admin.conf` (0600): an edgectl config for this box's operator, made on
    the first start with the API off loopback (kept as it is after that)."""
    path = trust.data_dir / LOCAL_ADMIN_CONFIG
    make_admin_config(trust, trust.store, path, [reachable_address(address)])
    return path
