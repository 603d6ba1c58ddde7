"""Settings, credentials, certificates and revoked nodes of an `EtcdStore`."""

from __future__ import annotations

from orchestrator.store import etcd_plans as plans
from orchestrator.store import etcd_records as records
from orchestrator.store import etcd_trust_plans as trust_plans
from orchestrator.store.credentials import CertificateRow, CredentialKind, CredentialRow
from orchestrator.store.etcd_base import EtcdStoreBase
from orchestrator.store.etcd_keys import name_of


class EtcdTrustRecords(EtcdStoreBase):
    """The settings and the trust records half of `EtcdStore`.

    Writes to the trust records are not leader-only: any controller may record or
    revoke (an admin's request reaches whichever one it reaches).
    """

    # Settings

    def get_setting(self, key: str) -> str | None:
        """A setting's value, or None."""
        return self._record(self._keys.setting(key), records.setting_of)

    def set_setting(self, key: str, value: str) -> None:
        """Set (or replace) a setting."""
        self._write(lambda _: plans.set_setting(self._keys, key, value))

    def set_setting_if_absent(self, key: str, value: str) -> str:
        """Set a setting unless it has a value; return the value in force (first writer wins)."""
        return self._write(lambda s: plans.set_setting_if_absent(s, self._keys, key, value))

    # Credentials

    def add_credential(
        self,
        kind: CredentialKind,
        credential_id: str,
        *,
        secret_sha256: str,
        description: str,
        expires_at: float | None,
    ) -> CredentialRow:
        """Record a join token or API key by the SHA-256 of its secret."""
        now = self._clock()
        return self._write(
            lambda s: trust_plans.add_credential(
                s,
                self._keys,
                kind,
                credential_id,
                secret_sha256=secret_sha256,
                description=description,
                now=now,
                expires_at=expires_at,
            )
        )

    def credential(self, kind: CredentialKind, credential_id: str) -> CredentialRow | None:
        """One join token or API key, or None."""
        return self._record(self._keys.credential(kind, credential_id), records.credential_of)

    def credentials(self, kind: CredentialKind) -> list[CredentialRow]:
        """Every join token or every API key, oldest first."""
        rows = self._records(self._keys.credential(kind), records.credential_of)
        return sorted(rows, key=lambda row: (row.created_at, row.id))

    def revoke_credential(self, kind: CredentialKind, credential_id: str) -> bool:
        """Revoke a join token or API key; False when unknown or revoked already."""
        now = self._clock()
        return self._write(
            lambda s: trust_plans.revoke_credential(s, self._keys, kind, credential_id, now)
        )

    def mark_credential_used(self, kind: CredentialKind, credential_id: str) -> None:
        """Note that a credential was just used."""
        now = self._clock()
        self._write(lambda s: trust_plans.mark_used(s, self._keys, kind, credential_id, now))

    # Certificates and revoked nodes

    def add_certificate(self, serial: int, node_id: str, not_after: float) -> None:
        """Record a certificate the cluster CA issued to a node or to `admin/NAME`."""
        now = self._clock()
        self._write(
            lambda s: trust_plans.add_certificate(s, self._keys, serial, node_id, now, not_after)
        )

    def certificate_revoked(self, serial: int) -> bool | None:
        """Whether an issued certificate is revoked (None: never issued here)."""
        row = self._record(self._keys.certificate(serial), records.certificate_of)
        return None if row is None else row.revoked_at is not None

    def revoke_certificates(self, owner: str) -> int:
        """Revoke every certificate recorded for `owner`; returns how many were revoked.

        etcd caps the operations of one transaction, so many certificates are revoked
        in parts of at most `MAX_KEYS_PER_TXN`, each holding only if the certificates
        it changes are as read. A crash between two parts leaves each certificate
        whole, revoked or not; calling again revokes the rest.
        """
        now = self._clock()
        return self._revoke_rest(owner, now, 0)

    def certificates(self, owner_prefix: str) -> list[CertificateRow]:
        """Every certificate whose owner starts with `owner_prefix`, oldest first."""
        rows = self._records(self._keys.certificate(), records.certificate_of)
        chosen = [row for row in rows if row.owner.startswith(owner_prefix)]
        return sorted(chosen, key=lambda row: (row.issued_at, row.owner, row.serial))

    def revoke_node(self, node_id: str, reason: str) -> int:
        """Revoke a node and its certificates; returns how many certificates.

        The node is recorded revoked in the first part, with its first certificates;
        the rest follow in parts as in `revoke_certificates`.
        """
        now = self._clock()
        first = self._write(lambda s: trust_plans.revoke_node(s, self._keys, node_id, reason, now))
        return self._revoke_rest(node_id, now, first) if first else 0

    def _revoke_rest(self, owner: str, now: float, revoked: int) -> int:
        """Revoke `owner`'s certificates part by part until none is left; the total."""
        while part := self._write(
            lambda s: trust_plans.revoke_certificates(s, self._keys, owner, now)
        ):
            revoked += part
        return revoked

    def live_certificate_until(self, node_id: str) -> float | None:
        """When the node's latest valid certificate expires (None: it holds none)."""
        now = self._clock()
        rows = self._records(self._keys.certificate(), records.certificate_of)
        live = [
            row.not_after
            for row in rows
            if row.owner == node_id and row.revoked_at is None and row.not_after > now
        ]
        return max(live, default=None)

    def revoked_nodes(self) -> dict[str, str]:
        """Revoked node id → reason."""
        return {
            name_of(kv.key): records.load(kv.key, kv.value, records.revoked_reason_of)
            for kv in self._items(self._keys.revoked())
        }
