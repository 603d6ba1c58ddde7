"""The controller API's trust calls: make, list and revoke join tokens and API keys, and
revoke nodes. Secrets appear only in the answer to `create`. Admin certificates: see
`required` (the calls live in `orchestrator.admin_service`)."""

from __future__ import annotations

from typing import cast, get_args

import grpc

from edgefleet.v1 import controller_pb2
from edgefleet_common.grpc_errors import StatusError
from edgefleet_contract.wire import timestamp
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.store.credentials import CredentialKind, CredentialRow
from orchestrator.trust.cluster_trust import ClusterTrust

MAX_DESCRIPTION = 200
MAX_TTL_S = 10 * 365 * 86400.0


def credential_view(row: CredentialRow) -> controller_pb2.CredentialView:
    """A token or key as the API shows it (never its secret or digest)."""
    view = controller_pb2.CredentialView(
        kind=row.kind, id=row.id, description=row.description, created_at=timestamp(row.created_at)
    )
    for field, value in (
        ("expires_at", row.expires_at),
        ("revoked_at", row.revoked_at),
        ("last_used_at", row.last_used_at),
    ):
        if value is not None:
            getattr(view, field).CopyFrom(timestamp(value))
    return view


class TrustAdmin:
    """Handles the credential and node-revocation calls of the controller API."""

    def __init__(self, trust: ClusterTrust | None, fleet: Fleet, events: EventLog) -> None:
        self._trust = trust
        self._fleet = fleet
        self._events = events

    def required(self) -> ClusterTrust:
        """The cluster's trust (FAILED_PRECONDITION for an `--insecure` controller)."""
        if self._trust is None:
            raise StatusError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the controller runs with --insecure: it has no CA, tokens, API keys or admin "
                "certificates",
            )
        return self._trust

    def create(
        self, request: controller_pb2.CreateCredentialRequest
    ) -> controller_pb2.CreateCredentialResponse:
        kind = _kind(request.kind)
        if len(request.description) > MAX_DESCRIPTION:
            raise StatusError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"description is longer than {MAX_DESCRIPTION} characters",
            )
        if not 0 <= request.ttl_s <= MAX_TTL_S:  # also refuses NaN
            raise StatusError(
                grpc.StatusCode.INVALID_ARGUMENT, f"ttl_s must be 0 (no expiry) to {MAX_TTL_S:g}"
            )
        row, secret = self.required().book.create(kind, request.description, request.ttl_s)
        self._events.record(
            "info", "CredentialCreated", f"{kind}/{row.id}", f"{kind} {row.id} created"
        )
        return controller_pb2.CreateCredentialResponse(
            credential=credential_view(row), secret=secret
        )

    def list(
        self, request: controller_pb2.ListCredentialsRequest
    ) -> controller_pb2.ListCredentialsResponse:
        rows = self.required().book.list(_kind(request.kind))
        return controller_pb2.ListCredentialsResponse(
            credentials=[credential_view(r) for r in rows]
        )

    def revoke(
        self, request: controller_pb2.RevokeCredentialRequest
    ) -> controller_pb2.RevokeCredentialResponse:
        kind = _kind(request.kind)
        book = self.required().book
        if not any(row.id == request.id for row in book.list(kind)):
            raise StatusError(grpc.StatusCode.NOT_FOUND, f"no {kind} {request.id[:40]!r}")
        revoked = book.revoke(kind, request.id)
        if revoked:
            self._events.record(
                "info", "CredentialRevoked", f"{kind}/{request.id}", f"{kind} {request.id} revoked"
            )
        return controller_pb2.RevokeCredentialResponse(revoked=revoked)

    def revoke_node(
        self, request: controller_pb2.RevokeNodeRequest
    ) -> controller_pb2.RevokeNodeResponse:
        trust = self.required()
        if not request.node_id or len(request.node_id) > 63:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "node_id must be 1-63 characters")
        reason = request.reason[:MAX_DESCRIPTION] or "revoked by an operator"
        count = trust.store.revoke_node(request.node_id, reason)
        self._fleet.revoke(request.node_id, reason)
        self._events.record(
            "warning",
            "NodeRevoked",
            f"node/{request.node_id}",
            f"{request.node_id} revoked ({reason}); {count} certificate(s) no longer renewed",
            node_id=request.node_id,
        )
        return controller_pb2.RevokeNodeResponse(certificates_revoked=count)


def _kind(text: str) -> CredentialKind:
    if text not in get_args(CredentialKind):
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"kind must be one of {', '.join(get_args(CredentialKind))}, not {text[:40]!r}",
        )
    return cast(CredentialKind, text)
