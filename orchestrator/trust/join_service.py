"""The controller's JoinService: join tokens and renewals in, node certificates out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from edgefleet.v1 import trust_pb2, trust_pb2_grpc
from edgefleet_common.grpc_errors import Ctx, ErrorMapping, StatusError
from edgefleet_common.pki import PkiError, load_cert, load_csr, node_id_of, now, valid_node_id
from edgefleet_contract.wire import timestamp
from orchestrator.events import EventLog
from orchestrator.store import StateStore
from orchestrator.trust.ca import ClusterCa, IssuedCert
from orchestrator.trust.credential_book import CredentialBook, CredentialRejected

log = logging.getLogger(__name__)

MAX_PEM_BYTES = 16 * 1024


def _classify(error: Exception) -> tuple[grpc.StatusCode, str] | None:
    if isinstance(error, StatusError):
        return error.code, str(error)
    if isinstance(error, CredentialRejected):
        return grpc.StatusCode.UNAUTHENTICATED, str(error)
    if isinstance(error, PkiError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    return None


_errors = ErrorMapping(_classify, "in the join service", log)


class JoinService(trust_pb2_grpc.JoinServiceServicer):
    """Issues node certificates to nodes with a valid join token or a current certificate."""

    def __init__(
        self,
        ca: ClusterCa,
        book: CredentialBook,
        store: StateStore,
        events: EventLog,
        lifetime: timedelta,
        on_join: Callable[[str], None] = lambda node_id: None,
    ) -> None:
        """`on_join(node_id)` runs after a node joined (e.g. to dial it again at once)."""
        self._ca = ca
        self._book = book
        self._store = store
        self._events = events
        self._lifetime = lifetime
        self._on_join = on_join

    @_errors.unary
    async def Join(self, request: trust_pb2.JoinRequest, context: Ctx) -> trust_pb2.JoinResponse:
        node_id = request.node_id
        if not valid_node_id(node_id):
            raise StatusError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"node_id {node_id[:80]!r} is not a DNS label (a-z, 0-9, '-', at most 63)",
            )
        token = self._book.check_join(request.credential)
        csr = load_csr(_pem(request.csr_pem, "csr_pem"))
        reason = self._store.revoked_nodes().get(node_id)
        if reason is not None:
            raise StatusError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node id {node_id} was revoked ({reason}) and stays revoked: give this box "
                "another id",
            )
        until = self._store.live_certificate_until(node_id)
        if until is not None:
            # Otherwise any token holder could take over a live node's identity.
            raise StatusError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"node {node_id} already holds a valid certificate (until "
                f"{datetime.fromtimestamp(until, UTC):%Y-%m-%d %H:%M:%S} UTC); a box that "
                "replaces it joins under a new id (and `edgectl node revoke` retires the old)",
            )
        issued = self._issue(csr, node_id)
        self._events.record(
            "info",
            "NodeJoined",
            f"node/{node_id}",
            f"{node_id} joined with token {token.id}; certificate valid until "
            f"{issued.not_after:%Y-%m-%d %H:%M:%S} UTC",
            node_id=node_id,
        )
        self._on_join(node_id)
        return self._answer(issued)

    @_errors.unary
    async def Renew(self, request: trust_pb2.RenewRequest, context: Ctx) -> trust_pb2.JoinResponse:
        current = load_cert(_pem(request.certificate_pem, "certificate_pem"))
        node_id = node_id_of(current)
        if node_id is None or not self._ca.issued_by_me(current):
            raise CredentialRejected("the certificate is not a node certificate of this cluster")
        revoked = self._store.certificate_revoked(current.serial_number)
        if revoked is None:
            raise CredentialRejected("the certificate was not issued by this controller")
        reason = self._store.revoked_nodes().get(node_id)
        if revoked or reason is not None:
            raise StatusError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node {node_id} was revoked ({reason or 'certificate revoked'}); "
                "join again with a new token",
            )
        if now() > current.not_valid_after_utc + self._lifetime:
            raise CredentialRejected(
                f"the certificate of {node_id} expired more than one lifetime ago; join again"
            )
        csr_pem = _pem(request.csr_pem, "csr_pem")
        _check_possession(current, csr_pem, request.signature)
        issued = self._issue(load_csr(csr_pem), node_id)
        log.info(
            "renewed a node certificate",
            extra={"node": node_id, "not_after": f"{issued.not_after:%Y-%m-%dT%H:%M:%SZ}"},
        )
        return self._answer(issued)

    def _issue(self, csr: x509.CertificateSigningRequest, node_id: str) -> IssuedCert:
        issued = self._ca.issue_node(csr, node_id, self._lifetime)
        self._store.add_certificate(issued.serial, node_id, issued.not_after.timestamp())
        return issued

    def _answer(self, issued: IssuedCert) -> trust_pb2.JoinResponse:
        return trust_pb2.JoinResponse(
            certificate_pem=issued.pem,
            ca_pem=self._ca.cert_pem,
            not_after=timestamp(issued.not_after.timestamp()),
            cluster=self._store.cluster_name,
            lifetime_s=self._lifetime.total_seconds(),
        )


def _pem(data: bytes, field: str) -> bytes:
    if not data:
        raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, f"{field} is empty")
    if len(data) > MAX_PEM_BYTES:
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{field} is larger than {MAX_PEM_BYTES} bytes"
        )
    return data


def _check_possession(current: x509.Certificate, csr_pem: bytes, signature: bytes) -> None:
    """The renewing node holds the current certificate's key: it signed the new request."""
    public = current.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CredentialRejected("the certificate's key is not an ECDSA key")
    try:
        public.verify(signature, csr_pem, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise CredentialRejected(
            "the renewal is not signed by the current certificate's key"
        ) from None
