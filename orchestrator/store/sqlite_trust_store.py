"""Settings, credentials, certificates and revoked nodes of a `SqliteStore`."""

from __future__ import annotations

from orchestrator.store import credentials as _credentials
from orchestrator.store import settings as _settings
from orchestrator.store.credentials import CertificateRow, CredentialKind, CredentialRow
from orchestrator.store.sqlite_base import SqliteStoreBase


class SqliteTrustRecords(SqliteStoreBase):
    """The settings and the trust records half of `SqliteStore`."""

    # Settings

    def get_setting(self, key: str) -> str | None:
        """A setting's value, or None."""
        with self._db.read() as conn:
            return _settings.get_setting(conn, key)

    def set_setting(self, key: str, value: str) -> None:
        """Set (or replace) a setting."""
        with self._write("settings") as conn:
            _settings.set_setting(conn, key, value)

    def set_setting_if_absent(self, key: str, value: str) -> str:
        """Set a setting unless it has a value; return the value in force."""
        with self._db.write() as conn:
            stored, written = _settings.set_setting_if_absent(conn, key, value)
        if written:
            self._changes.notify(["settings"])
        return stored

    # Credentials and node trust

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
        with self._write("credentials") as conn:
            return _credentials.add_credential(
                conn,
                kind,
                credential_id,
                secret_sha256=secret_sha256,
                description=description,
                now=self._clock(),
                expires_at=expires_at,
            )

    def credential(self, kind: CredentialKind, credential_id: str) -> CredentialRow | None:
        """One join token or API key, or None."""
        with self._db.read() as conn:
            return _credentials.credential(conn, kind, credential_id)

    def credentials(self, kind: CredentialKind) -> list[CredentialRow]:
        """Every join token or every API key, oldest first."""
        with self._db.read() as conn:
            return _credentials.credentials(conn, kind)

    def revoke_credential(self, kind: CredentialKind, credential_id: str) -> bool:
        """Revoke a join token or API key; False when unknown or revoked already."""
        with self._write("credentials") as conn:
            return _credentials.revoke_credential(conn, kind, credential_id, self._clock())

    def mark_credential_used(self, kind: CredentialKind, credential_id: str) -> None:
        """Note that a credential was just used."""
        with self._write("credentials") as conn:
            _credentials.mark_used(conn, kind, credential_id, self._clock())

    def add_certificate(self, serial: int, node_id: str, not_after: float) -> None:
        """Record a certificate the cluster CA issued to a node or to `admin/NAME`."""
        with self._write("credentials") as conn:
            _credentials.add_certificate(
                conn, serial, node_id, issued_at=self._clock(), not_after=not_after
            )

    def certificate_revoked(self, serial: int) -> bool | None:
        """Whether an issued certificate is revoked (None: never issued here)."""
        with self._db.read() as conn:
            return _credentials.certificate_revoked(conn, serial)

    def revoke_node(self, node_id: str, reason: str) -> int:
        """Revoke a node and its certificates; returns how many certificates."""
        with self._write("credentials") as conn:
            return _credentials.revoke_node(conn, node_id, reason, self._clock())

    def revoke_certificates(self, owner: str) -> int:
        """Revoke every certificate recorded for `owner`; returns how many were revoked."""
        with self._write("credentials") as conn:
            return _credentials.revoke_certificates(conn, owner, self._clock())

    def certificates(self, owner_prefix: str) -> list[CertificateRow]:
        """Every certificate whose owner starts with `owner_prefix`, oldest first."""
        with self._db.read() as conn:
            return _credentials.certificates(conn, owner_prefix)

    def live_certificate_until(self, node_id: str) -> float | None:
        """When the node's latest valid certificate expires (None: it holds none)."""
        with self._db.read() as conn:
            return _credentials.live_certificate_until(conn, node_id, self._clock())

    def revoked_nodes(self) -> dict[str, str]:
        """Revoked node id → reason."""
        with self._db.read() as conn:
            return _credentials.revoked_nodes(conn)
