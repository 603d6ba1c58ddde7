"""The decisions behind each write of credentials, certificates and revoked nodes to etcd."""

from __future__ import annotations

from dataclasses import replace

from orchestrator.etcd.txn import Op
from orchestrator.store import etcd_records as records
from orchestrator.store.credentials import (
    CertificateRow,
    CredentialKind,
    CredentialRow,
    check_kind,
)
from orchestrator.store.errors import StoreError
from orchestrator.store.etcd_keys import ClusterKeys
from orchestrator.store.etcd_writer import MAX_KEYS_PER_TXN, Decision, Snapshot


def add_credential(
    s: Snapshot,
    keys: ClusterKeys,
    kind: CredentialKind,
    credential_id: str,
    *,
    secret_sha256: str,
    description: str,
    now: float,
    expires_at: float | None,
) -> Decision[CredentialRow]:
    """Record a new credential; StoreError when its id is taken."""
    check_kind(kind)
    key = keys.credential(kind, credential_id)
    if s.get(key, records.credential_of) is not None:
        raise StoreError(f"a {kind} with id {credential_id!r} exists already; pick another id")
    row = CredentialRow(
        kind, credential_id, secret_sha256, description, now, expires_at, None, None
    )
    return Decision(row, [Op.put(key, records.credential(row))])


def revoke_credential(
    s: Snapshot, keys: ClusterKeys, kind: CredentialKind, credential_id: str, now: float
) -> Decision[bool]:
    """Revoke a credential; False when unknown or revoked already."""
    key = keys.credential(kind, credential_id)
    known = s.get(key, records.credential_of)
    if known is None or known.revoked_at is not None:
        return Decision(False)
    return Decision(True, [Op.put(key, records.credential(replace(known, revoked_at=now)))])


def mark_used(
    s: Snapshot, keys: ClusterKeys, kind: CredentialKind, credential_id: str, now: float
) -> Decision[None]:
    """Note when a credential was last used (nothing when unknown)."""
    key = keys.credential(kind, credential_id)
    known = s.get(key, records.credential_of)
    if known is None:
        return Decision(None)
    return Decision(None, [Op.put(key, records.credential(replace(known, last_used_at=now)))])


def add_certificate(
    s: Snapshot, keys: ClusterKeys, serial: int, owner: str, issued_at: float, not_after: float
) -> Decision[None]:
    """Record an issued certificate; StoreError when its serial is taken."""
    key = keys.certificate(serial)
    if s.get(key, records.certificate_of) is not None:
        raise StoreError(
            f"a certificate with serial {serial:x} is recorded already; the CA must not "
            "reuse serial numbers"
        )
    row = CertificateRow(serial, owner, issued_at, not_after, None)
    return Decision(None, [Op.put(key, records.certificate(row))])


def revoke_certificates(
    s: Snapshot, keys: ClusterKeys, owner: str, now: float, ops: list[Op] | None = None
) -> Decision[int]:
    """Revoke the first unrevoked certificates of `owner` (after `ops`, if given), at most
    `MAX_KEYS_PER_TXN` keys in all; 0 when none is left to revoke."""
    ops = list(ops or [])
    held = s.scan(
        keys.certificate(),
        records.certificate_of,
        lambda row: row.owner == owner and row.revoked_at is None,
        limit=MAX_KEYS_PER_TXN - len(ops),
    )
    for key, row in held:
        ops.append(Op.put(key, records.certificate(replace(row, revoked_at=now))))
    return Decision(len(held), ops)


def revoke_node(
    s: Snapshot, keys: ClusterKeys, node_id: str, reason: str, now: float
) -> Decision[int]:
    """Revoke a node and the first of its certificates (see `revoke_certificates`)."""
    revoked = Op.put(keys.revoked(node_id), records.revoked_node(reason, now))
    return revoke_certificates(s, keys, node_id, now, [revoked])
