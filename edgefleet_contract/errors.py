"""The contract's one error: a message that does not follow it."""

from __future__ import annotations


class InvalidMessage(ValueError):
    """A message breaks the contract (a bad desired state, a malformed field); the text
    says which field and why. Servers answer it with INVALID_ARGUMENT."""
