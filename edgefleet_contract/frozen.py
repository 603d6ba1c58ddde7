"""The base of the contract's data: immutable, and strict about unknown fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """A contract value: frozen (safe to share and compare) and refusing unknown fields
    (a message from a newer or broken sender says what it does not understand)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
