"""Who may call which method of the node API: the controller everything, a peer node requests.

TLS has already checked that the cluster CA signed the client's certificate (one of
another cluster fails the handshake). The certificate then says the caller's role:
the controller's (`edgefleet://controller`) may call every method; a node's
(`ID.node.edgefleet.invalid`, `edgefleet://node/ID`) may only send the requests its
gateway routes here, and fetch the model blobs this node serves to the fleet — it
can never command this node (apply a state or routes, load or unload a model, watch
its status). Anything else is refused with
PERMISSION_DENIED naming the role, and so is a method shape the node API does not
use (UNIMPLEMENTED), never left unchecked.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

import grpc
from cryptography import x509

from edgefleet_common.grpc_checks import checked
from edgefleet_common.pki import PkiError, is_controller, load_cert, node_id_of, node_server_name

Role = Literal["controller", "node"]

NODE_SERVICE = "/edgefleet.v1.NodeService/"
PEER_METHODS = frozenset(
    NODE_SERVICE + name for name in ("InvokeAgent", "InvokeAgentUnary", "ProxyModel", "FetchBlob")
)
"""What a peer node may call: requests its gateway routes to this node's replicas, and
the model blobs this node serves to the fleet."""


def role_of(pems: Iterable[bytes]) -> tuple[Role, str] | None:
    """(role, who) of the first client certificate that names one; None: no role."""
    for pem in pems:
        try:
            cert = load_cert(pem)
        except PkiError:
            continue
        if is_controller(cert):
            return "controller", "the controller"
        node = node_id_of(cert)
        if node is not None and _names_node(cert, node):
            return "node", f"node `{node}`"
    return None


@functools.lru_cache(maxsize=256)
def cached_role_of(pems: tuple[bytes, ...]) -> tuple[Role, str] | None:
    """`role_of`, remembered per certificate chain: parsing the caller's certificate on
    every call cost 5-8 % of a node's CPU under load (`bench/gateway_profile.py`). The
    role is a function of the certificate's bytes alone, so a renewed certificate is a
    new entry and nothing stale is kept."""
    return role_of(pems)


def _names_node(cert: x509.Certificate, node_id: str) -> bool:
    """Whether the certificate also carries the node's DNS name (as the CA issues it)."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return node_server_name(node_id) in names.get_values_for_type(x509.DNSName)


def refusal(role: tuple[Role, str] | None, method: str) -> str | None:
    """Why a caller of this role may not call `method` (a full gRPC path); None: it may."""
    if role is None:
        return (
            "the client certificate names neither the controller nor a node of this "
            "cluster: only they may call the node API"
        )
    kind, who = role
    if kind == "controller" or method in PEER_METHODS:
        return None
    name = method.rsplit("/", 1)[-1]
    return (
        f"{who} calls with a node's certificate, which may only send requests "
        "(InvokeAgent, InvokeAgentUnary, ProxyModel) and fetch model blobs (FetchBlob); "
        f"{name} is for the cluster's controller"
    )


class RoleGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Admits each call by its client certificate's role (see the module's table)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method

        async def check(request: Any, context: Any) -> None:
            pems = tuple(context.auth_context().get("x509_pem_cert") or ())
            reason = refusal(cached_role_of(pems), method)
            if reason is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

        return checked(handler, check)
