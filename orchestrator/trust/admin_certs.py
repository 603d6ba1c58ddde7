"""Admin client certificates: who may drive the controller API off loopback.

An admin's key is made on the operator's machine; the controller signs a request
for it as `edgefleet://admin/NAME` and records the certificate in the store under
the owner `admin/NAME`, so every controller of the cluster sees its revocation.
A controller whose API is off loopback writes `DATA_DIR/admin.conf` for its
first admin (`local-<controller id>`), so the operator of the box can start.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from edgefleet_common.pki import (
    PkiError,
    admin_csr,
    admin_name_problem,
    key_pem,
    load_csr,
    new_key,
)
from orchestrator.cli.client_config import ClientConfig, ConfigError, load_client_config
from orchestrator.store import StateStore
from orchestrator.store.credentials import CertificateRow
from orchestrator.trust.ca import DEFAULT_ADMIN_CERT_LIFETIME, ClusterCa, IssuedCert
from orchestrator.trust.cluster_trust import ClusterTrust

ADMIN_OWNER_PREFIX = "admin/"
LOCAL_ADMIN_CONFIG = "admin.conf"
MAX_CSR_BYTES = 16 * 1024


def admin_owner(name: str) -> str:
    """The store's owner of admin `name`'s certificates."""
    return ADMIN_OWNER_PREFIX + name


def local_admin_name(controller_id: str) -> str:
    """The first admin a controller makes for its own box."""
    return f"local-{controller_id[:8].lower()}"


class AdminCerts:
    """Issues, revokes and lists admin certificates (the CA signs, the store records)."""

    def __init__(self, ca: ClusterCa, store: StateStore) -> None:
        self._ca = ca
        self._store = store

    def issue(
        self, name: str, csr_pem: bytes, lifetime: timedelta = DEFAULT_ADMIN_CERT_LIFETIME
    ) -> IssuedCert:
        """Sign `csr_pem` as admin `name` and record it (PkiError for a bad name or request)."""
        problem = admin_name_problem(name)
        if problem is not None:
            raise PkiError(problem)
        if len(csr_pem) > MAX_CSR_BYTES:
            raise PkiError(f"the signing request is larger than {MAX_CSR_BYTES} bytes")
        issued = self._ca.issue_admin(load_csr(csr_pem), name, lifetime)
        self._store.add_certificate(issued.serial, issued.node_id, issued.not_after.timestamp())
        return issued

    def revoke(self, name: str) -> int:
        """Revoke every certificate of admin `name`; how many were in force."""
        return self._store.revoke_certificates(admin_owner(name))

    def rows(self) -> list[CertificateRow]:
        """Every admin certificate issued, oldest first."""
        return self._store.certificates(ADMIN_OWNER_PREFIX)

    def known(self, name: str) -> bool:
        """Whether admin `name` was ever issued a certificate."""
        return any(row.owner == admin_owner(name) for row in self.rows())


def make_admin_config(
    trust: ClusterTrust, store: StateStore, path: Path, controllers: Sequence[str]
) -> bool:
    """Write an edgectl config (0600) for this controller's local admin to `path`, unless
    one for this cluster CA is there; `controllers`: the API addresses it lists. True when
    written."""
    if path.exists() and _trusts(path, trust.ca.cert_pem):
        return False
    name = local_admin_name(store.controller_id)
    key = new_key()
    issued = AdminCerts(trust.ca, store).issue(name, admin_csr(key, name))
    config = ClientConfig(
        cluster=store.cluster_name,
        controllers=tuple(controllers),
        ca_pem=trust.ca.cert_pem,
        cert_pem=issued.pem,
        key_pem=key_pem(key),
        source=str(path),
    )
    config.write(
        path,
        f"edgectl config for admin {name} of cluster {store.cluster_name}, made by the\n"
        "controller at its first start off loopback. It holds a private key: keep it\n"
        "private. Use: edgectl --config FILE status; revoke: edgectl admin revoke "
        f"{name}",
    )
    return True


def _trusts(path: Path, ca_pem: bytes) -> bool:
    """Whether the config at `path` trusts this CA (an unreadable one is left alone)."""
    try:
        return load_client_config(path).ca_pem.strip() == ca_pem.strip()
    except ConfigError:
        return True
