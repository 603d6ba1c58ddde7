"""The controller API's admin certificate calls: CreateAdmin, RevokeAdmin, ListAdmins.

CreateAdmin signs a request whose key the operator made on their own machine (the
key never travels) and answers with everything an edgectl config needs: the
certificate, the cluster CA, the cluster's name and every controller address
known. A name may be issued again (a new machine, a renewal); RevokeAdmin revokes
all of its certificates at once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc

from edgefleet.v1 import controller_pb2
from edgefleet_common.grpc_errors import Ctx
from edgefleet_common.pki import PkiError, admin_name_problem
from edgefleet_contract.wire import timestamp
from orchestrator.api_errors import ApiError, unary
from orchestrator.events import EventLog
from orchestrator.store.credentials import CertificateRow
from orchestrator.trust.admin import TrustAdmin
from orchestrator.trust.admin_certs import ADMIN_OWNER_PREFIX, AdminCerts
from orchestrator.trust.ca import DEFAULT_ADMIN_CERT_LIFETIME, MAX_ADMIN_CERT_LIFETIME

KNOWN_SHOWN = 20
"""Admin names listed when a request names an unknown one."""


def admin_view(row: CertificateRow) -> controller_pb2.AdminCertificate:
    """A recorded admin certificate as the API shows it."""
    view = controller_pb2.AdminCertificate(
        name=row.owner.removeprefix(ADMIN_OWNER_PREFIX),
        serial=format(row.serial, "x"),
        issued_at=timestamp(row.issued_at),
        expires_at=timestamp(row.not_after),
    )
    if row.revoked_at is not None:
        view.revoked_at.CopyFrom(timestamp(row.revoked_at))
    return view


def _lifetime(days: int) -> timedelta:
    if days == 0:
        return DEFAULT_ADMIN_CERT_LIFETIME
    if days > MAX_ADMIN_CERT_LIFETIME.days:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"lifetime_days must be 1 to {MAX_ADMIN_CERT_LIFETIME.days} (0: the default, "
            f"{DEFAULT_ADMIN_CERT_LIFETIME.days})",
        )
    return timedelta(days=days)


def _checked_name(name: str) -> str:
    problem = admin_name_problem(name)
    if problem is not None:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, problem)
    return name


class AdminCalls:
    """The admin certificate RPCs of ControllerService (one of its bases)."""

    _trust: TrustAdmin
    _events: EventLog
    _control_plane: Callable[[], controller_pb2.ControlPlane]

    def _admins(self) -> AdminCerts:
        trust = self._trust.required()
        return AdminCerts(trust.ca, trust.store)

    @unary
    async def CreateAdmin(
        self, request: controller_pb2.CreateAdminRequest, context: Ctx
    ) -> controller_pb2.CreateAdminResponse:
        name = _checked_name(request.name)
        lifetime = _lifetime(request.lifetime_days)
        trust = self._trust.required()
        try:
            issued = self._admins().issue(name, request.csr_pem.encode(), lifetime)
        except PkiError as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        self._events.record(
            "info",
            "AdminCreated",
            f"admin/{name}",
            f"admin certificate {issued.serial:x} issued to {name}, valid until "
            f"{issued.not_after:%Y-%m-%d}",
        )
        row = CertificateRow(
            serial=issued.serial,
            owner=issued.node_id,
            issued_at=datetime.now(UTC).timestamp(),
            not_after=issued.not_after.timestamp(),
            revoked_at=None,
        )
        members = self._control_plane().controllers
        return controller_pb2.CreateAdminResponse(
            certificate_pem=issued.pem.decode(),
            ca_pem=trust.ca.cert_pem.decode(),
            cluster=trust.store.cluster_name,
            controllers=[m.address for m in members if m.address],
            admin=admin_view(row),
        )

    @unary
    async def RevokeAdmin(
        self, request: controller_pb2.RevokeAdminRequest, context: Ctx
    ) -> controller_pb2.RevokeAdminResponse:
        name = _checked_name(request.name)
        admins = self._admins()
        if not admins.known(name):
            names = sorted({r.owner.removeprefix(ADMIN_OWNER_PREFIX) for r in admins.rows()})
            shown = ", ".join(names[:KNOWN_SHOWN]) or "none"
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"no admin named {name}; admins: {shown}")
        count = admins.revoke(name)
        if count:
            self._events.record(
                "warning",
                "AdminRevoked",
                f"admin/{name}",
                f"admin {name} revoked: {count} certificate(s) refused from now on",
            )
        return controller_pb2.RevokeAdminResponse(revoked=count)

    @unary
    async def ListAdmins(
        self, request: controller_pb2.ListAdminsRequest, context: Ctx
    ) -> controller_pb2.ListAdminsResponse:
        return controller_pb2.ListAdminsResponse(
            admins=[admin_view(r) for r in self._admins().rows()]
        )
