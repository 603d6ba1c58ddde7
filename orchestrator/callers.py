"""Who called the controller API, in words for the record of what they changed."""

from __future__ import annotations

from typing import Any

from edgefleet_common.ports import is_loopback
from orchestrator.api_auth import cached_caller_of

IN_PROCESS = "in-process:"
"""The peer a call made inside the controller names (the dashboard's: `in-process:dashboard`)."""


def caller_name(context: Any) -> str:
    """`admin NAME` for an admin certificate, `a controller` for a controller's, the part
    of the controller that called (e.g. `dashboard`), `local` for a plaintext call from
    this machine, else `unauthenticated HOST` (a controller run with --insecure)."""
    pems = tuple(context.auth_context().get("x509_pem_cert") or ())
    caller = cached_caller_of(pems) if pems else None
    if caller is not None and caller.kind == "admin":
        return f"admin {caller.name}"
    if caller is not None and caller.kind == "controller":
        return "a controller"
    peer = str(context.peer() or "")
    if peer.startswith(IN_PROCESS):
        return peer.removeprefix(IN_PROCESS)
    address = peer.partition(":")[2]  # ipv4:127.0.0.1:5555, ipv6:[::1]:5555
    if address and is_loopback(address):
        return "local"
    return f"unauthenticated {address.rpartition(':')[0] or 'caller'}"
