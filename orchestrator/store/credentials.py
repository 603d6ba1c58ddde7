"""Credentials the controller hands out: join tokens and API keys (kept as SHA-256 of the
secret, never the secret), the certificates it issued (to nodes and admins), and the nodes
it revoked."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal, cast, get_args

CredentialKind = Literal["join-token", "api-key"]


@dataclass(frozen=True, slots=True)
class CredentialRow:
    """A join token or API key, without its secret."""

    kind: CredentialKind
    id: str
    secret_sha256: str
    description: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def usable(self, now: float) -> str | None:
        """None when the credential may be used now, else why not."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return None


@dataclass(frozen=True, slots=True)
class CertificateRow:
    """A certificate the cluster CA issued, to a node (`edge-1`) or an admin (`admin/alice`)."""

    serial: int
    owner: str
    issued_at: float
    not_after: float
    revoked_at: float | None


_COLUMNS = "kind, id, secret_sha256, description, created_at, expires_at, revoked_at, last_used_at"


def add_credential(
    conn: sqlite3.Connection,
    kind: CredentialKind,
    credential_id: str,
    *,
    secret_sha256: str,
    description: str,
    now: float,
    expires_at: float | None,
) -> CredentialRow:
    """Record a new credential (ids are unique per kind)."""
    check_kind(kind)
    conn.execute(
        f"INSERT INTO credentials ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
        (kind, credential_id, secret_sha256, description, now, expires_at),
    )
    return CredentialRow(
        kind, credential_id, secret_sha256, description, now, expires_at, None, None
    )


def check_kind(kind: str) -> None:
    """ValueError unless `kind` is a credential kind."""
    if kind not in get_args(CredentialKind):
        raise ValueError(f"kind must be one of {get_args(CredentialKind)}")


def credential(
    conn: sqlite3.Connection, kind: CredentialKind, credential_id: str
) -> CredentialRow | None:
    """One credential, or None."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM credentials WHERE kind = ? AND id = ?", (kind, credential_id)
    ).fetchone()
    return _row(row) if row else None


def credentials(conn: sqlite3.Connection, kind: CredentialKind) -> list[CredentialRow]:
    """Every credential of a kind, oldest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM credentials WHERE kind = ? ORDER BY created_at, id", (kind,)
    )
    return [_row(r) for r in rows]


def revoke_credential(
    conn: sqlite3.Connection, kind: CredentialKind, credential_id: str, now: float
) -> bool:
    """Revoke it; False when unknown or already revoked."""
    cursor = conn.execute(
        "UPDATE credentials SET revoked_at = ? WHERE kind = ? AND id = ? AND revoked_at IS NULL",
        (now, kind, credential_id),
    )
    return cursor.rowcount == 1


def mark_used(
    conn: sqlite3.Connection, kind: CredentialKind, credential_id: str, now: float
) -> None:
    """Note when the credential was last used."""
    conn.execute(
        "UPDATE credentials SET last_used_at = ? WHERE kind = ? AND id = ?",
        (now, kind, credential_id),
    )


def add_certificate(
    conn: sqlite3.Connection, serial: int, node_id: str, *, issued_at: float, not_after: float
) -> None:
    """Record a node certificate the CA issued."""
    conn.execute(
        "INSERT INTO node_certificates (serial, node_id, issued_at, not_after, revoked_at)"
        " VALUES (?, ?, ?, ?, NULL)",
        (format(serial, "x"), node_id, issued_at, not_after),
    )


def certificate_revoked(conn: sqlite3.Connection, serial: int) -> bool | None:
    """Whether an issued certificate is revoked; None when this CA never recorded it."""
    row = conn.execute(
        "SELECT revoked_at FROM node_certificates WHERE serial = ?", (format(serial, "x"),)
    ).fetchone()
    return None if row is None else row[0] is not None


def live_certificate_until(conn: sqlite3.Connection, node_id: str, now: float) -> float | None:
    """When the latest unrevoked, unexpired certificate of a node expires; None if none."""
    row = conn.execute(
        "SELECT MAX(not_after) FROM node_certificates"
        " WHERE node_id = ? AND revoked_at IS NULL AND not_after > ?",
        (node_id, now),
    ).fetchone()
    return row[0] if row and row[0] is not None else None


def revoke_node(conn: sqlite3.Connection, node_id: str, reason: str, now: float) -> int:
    """Revoke a node and every certificate it holds; returns how many certificates."""
    conn.execute(
        "INSERT INTO revoked_nodes (node_id, revoked_at, reason) VALUES (?, ?, ?)"
        " ON CONFLICT (node_id) DO UPDATE SET revoked_at = excluded.revoked_at,"
        " reason = excluded.reason",
        (node_id, now, reason),
    )
    return revoke_certificates(conn, node_id, now)


def revoke_certificates(conn: sqlite3.Connection, owner: str, now: float) -> int:
    """Revoke every unrevoked certificate of `owner`; returns how many."""
    cursor = conn.execute(
        "UPDATE node_certificates SET revoked_at = ? WHERE node_id = ? AND revoked_at IS NULL",
        (now, owner),
    )
    return cursor.rowcount


def certificates(conn: sqlite3.Connection, owner_prefix: str) -> list[CertificateRow]:
    """Every certificate whose owner starts with `owner_prefix`, oldest first."""
    rows = conn.execute(
        "SELECT serial, node_id, issued_at, not_after, revoked_at FROM node_certificates"
        " WHERE substr(node_id, 1, ?) = ? ORDER BY issued_at, node_id, serial",
        (len(owner_prefix), owner_prefix),
    )
    return [
        CertificateRow(int(serial, 16), owner, issued, not_after, revoked)
        for serial, owner, issued, not_after, revoked in rows
    ]


def revoked_nodes(conn: sqlite3.Connection) -> dict[str, str]:
    """Revoked node id → the reason given."""
    return dict(conn.execute("SELECT node_id, reason FROM revoked_nodes ORDER BY node_id"))


def _row(
    row: tuple[str, str, str, str, float, float | None, float | None, float | None],
) -> CredentialRow:
    kind, credential_id, digest, description, created, expires, revoked, used = row
    return CredentialRow(
        cast(CredentialKind, kind),
        credential_id,
        digest,
        description,
        created,
        expires,
        revoked,
        used,
    )
