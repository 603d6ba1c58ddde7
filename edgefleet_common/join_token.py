"""Join tokens: `EF1<CA fingerprint>::<id>.<secret>`, as `edgectl token create` prints them.

The fingerprint (SHA-256 of the cluster CA certificate, 64 hex digits) lets a
joining node check the controller before it sends anything; the id names the
token for `token list` and `token revoke`; only the secret is, well, secret —
the controller keeps its SHA-256, never the secret itself.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PREFIX = "EF1"
TOKEN_ENV = "EDGEFLEET_JOIN_TOKEN"
"""Where `edge-node run` also looks for its token (kept out of the process list)."""
_TOKEN = re.compile(
    rf"{PREFIX}(?P<fp>[0-9a-f]{{64}})::(?P<id>[0-9a-f]{{8}})\.(?P<secret>[0-9a-f]{{48}})"
)


class TokenFormatError(ValueError):
    """Text that is not a join token; the message says what is wrong without echoing it."""


@dataclass(frozen=True)
class JoinToken:
    """A parsed join token."""

    ca_fingerprint: str
    token_id: str
    secret: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.ca_fingerprint}::{self.token_id}.{self.secret}"

    @property
    def credential(self) -> str:
        """What the node sends to the controller: `<id>.<secret>`."""
        return f"{self.token_id}.{self.secret}"

    @classmethod
    def new(cls, ca_fingerprint: str) -> JoinToken:
        """A fresh token for the CA with this fingerprint."""
        return cls(ca_fingerprint, secrets.token_hex(4), secrets.token_hex(24))

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        """Parse a token (surrounding whitespace allowed)."""
        found = _TOKEN.fullmatch(text.strip())
        if found is None:
            if not text.strip().startswith(PREFIX):
                raise TokenFormatError(f"a join token starts with {PREFIX!r}")
            raise TokenFormatError(
                f"a join token is {PREFIX}<64 hex digits>::<8 hex digits>.<48 hex digits>"
            )
        return cls(found["fp"], found["id"], found["secret"])


def split_credential(text: str) -> tuple[str, str]:
    """`<id>.<secret>` → (id, secret); TokenFormatError when it is not that shape."""
    token_id, dot, secret = text.partition(".")
    if (
        not dot
        or not re.fullmatch(r"[0-9a-f]{8}", token_id)
        or not re.fullmatch(r"[0-9a-f]{48}", secret)
    ):
        raise TokenFormatError("a join credential is <8 hex digits>.<48 hex digits>")
    return token_id, secret
