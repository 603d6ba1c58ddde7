"""Gateway API keys: their form, and the digest every gateway compares.

A key looks like `efk_<8 hex id>_<48 hex secret>`. The controller keeps only the
SHA-256 (hex) of the secret part, and that digest is what the routing table gives
the nodes' gateways: any gateway checks a key the same way.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

API_KEY_PREFIX = "efk_"
_API_KEY = re.compile(r"efk_(?P<id>[0-9a-f]{8})_(?P<secret>[0-9a-f]{48})")


class MalformedApiKey(ValueError):
    """Text that is not an API key (the message never quotes it)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's parts."""

    key_id: str
    secret: str

    def __str__(self) -> str:
        return f"{API_KEY_PREFIX}{self.key_id}_{self.secret}"

    @property
    def digest(self) -> str:
        """SHA-256 of the secret part, lowercase hex: what is stored and sent."""
        return secret_digest(self.secret)


def secret_digest(secret: str) -> str:
    """SHA-256 of a secret, lowercase hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_api_key(text: str) -> ApiKey:
    """The parts of an API key; MalformedApiKey when it does not have the form."""
    found = _API_KEY.fullmatch(text)
    if found is None:
        raise MalformedApiKey(f"an API key looks like {API_KEY_PREFIX}<id>_<secret>")
    return ApiKey(found["id"], found["secret"])
