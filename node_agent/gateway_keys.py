"""The API keys a node's gateway accepts off loopback: those the routing table lists.

The controller puts the digest of every key in force into the routing table (the
SHA-256 of its secret part, `edgefleet_contract.api_keys`); the node keeps no other
record. Until a table with keys arrives, every key is
refused, and the refusal says why. The key itself is never logged or echoed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from edgefleet_contract.api_keys import MalformedApiKey, parse_api_key
from edgefleet_contract.routing_table import RoutingTable


class KeyRefused(Exception):
    """The key is not accepted; the message says why (it never quotes the key)."""


class TableKeys:
    """Checks a presented API key against the routing table in use."""

    def __init__(self, table: Callable[[], RoutingTable]) -> None:
        self._table = table

    def __call__(self, key: str) -> None:
        """Return when `key` is in force; KeyRefused otherwise."""
        table = self._table()
        if table.generation == 0:
            raise KeyRefused(
                "this node has not received a routing table from its controller yet, so it "
                "knows no API key; every key is refused until one arrives"
            )
        if not table.api_key_digests:
            raise KeyRefused(
                f"the routing table of this node (generation {table.generation}) lists no "
                "API key: create one with `edgectl apikey create`"
            )
        try:
            digest = parse_api_key(key).digest.encode()
        except MalformedApiKey as exc:
            raise KeyRefused(str(exc)) from None
        # Every digest is compared, in constant time, so timing says nothing of the list.
        found = False
        for known in table.api_key_digests:
            found |= hmac.compare_digest(digest, known.lower().encode())
        if not found:
            raise KeyRefused(
                "it is not a key in force (unknown, or revoked); `edgectl apikey list` "
                "shows the keys"
            )
