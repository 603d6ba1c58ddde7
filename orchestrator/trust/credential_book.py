"""The credentials the controller hands out — join tokens and gateway API keys: made,
checked, listed and revoked.

A secret is shown once, when it is made; the store keeps only its SHA-256 (the
secrets are 192 random bits, so a fast hash is enough: there is nothing to
guess). Checks compare digests in constant time. API keys look like
`efk_<8 hex id>_<48 hex secret>`.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable

from edgefleet_common.join_token import JoinToken, TokenFormatError, split_credential
from edgefleet_contract.api_keys import ApiKey, MalformedApiKey, parse_api_key, secret_digest
from orchestrator.store import StateStore
from orchestrator.store.credentials import CredentialKind, CredentialRow

USED_WRITE_INTERVAL_S = 60.0
"""`last_used_at` is written at most this often per credential (not on every request)."""


class CredentialRejected(Exception):
    """A token or key that does not admit its holder; the message never holds the secret."""


class CredentialBook:
    """The controller's join tokens and API keys, in its store."""

    def __init__(
        self, store: StateStore, ca_fingerprint: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._fingerprint = ca_fingerprint
        self._clock = clock
        self._used: dict[tuple[CredentialKind, str], float] = {}

    def create(
        self, kind: CredentialKind, description: str = "", ttl_s: float = 0.0
    ) -> tuple[CredentialRow, str]:
        """A new join token or API key: (its record, the whole secret to show once)."""
        if ttl_s < 0:
            raise ValueError("ttl must not be negative")
        expires = self._clock() + ttl_s if ttl_s else None
        if kind == "join-token":
            token = JoinToken.new(self._fingerprint)
            credential_id, secret, shown = token.token_id, token.secret, str(token)
        else:
            key = ApiKey(secrets.token_hex(4), secrets.token_hex(24))
            credential_id, secret, shown = key.key_id, key.secret, str(key)
        row = self._store.add_credential(
            kind,
            credential_id,
            secret_sha256=secret_digest(secret),
            description=description,
            expires_at=expires,
        )
        return row, shown

    def list(self, kind: CredentialKind) -> list[CredentialRow]:
        """Every token or key of a kind (revoked and expired ones included)."""
        return self._store.credentials(kind)

    def revoke(self, kind: CredentialKind, credential_id: str) -> bool:
        """Revoke one; False when it is unknown or revoked already."""
        return self._store.revoke_credential(kind, credential_id)

    def check_join(self, credential: str) -> CredentialRow:
        """The join token a node's `<id>.<secret>` belongs to (CredentialRejected if none)."""
        try:
            token_id, secret = split_credential(credential)
        except TokenFormatError as exc:
            raise CredentialRejected(str(exc)) from None
        return self._check("join-token", token_id, secret)

    def check_api_key(self, key: str) -> CredentialRow:
        """The API key record for `key` (CredentialRejected if it admits nobody)."""
        try:
            parsed = parse_api_key(key)
        except MalformedApiKey as exc:
            raise CredentialRejected(str(exc)) from None
        return self._check("api-key", parsed.key_id, parsed.secret)

    def _check(self, kind: CredentialKind, credential_id: str, secret: str) -> CredentialRow:
        row = self._store.credential(kind, credential_id)
        if row is None or not hmac.compare_digest(row.secret_sha256, secret_digest(secret)):
            raise CredentialRejected(f"unknown {kind.replace('-', ' ')}")
        now = self._clock()
        why = row.usable(now)
        if why is not None:
            raise CredentialRejected(f"{kind.replace('-', ' ')} {credential_id} is {why}")
        last = self._used.get((kind, credential_id), 0.0)
        if now - last >= USED_WRITE_INTERVAL_S:
            self._used[(kind, credential_id)] = now
            self._store.mark_credential_used(kind, credential_id)
        return row
