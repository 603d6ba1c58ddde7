"""The store's exception tree: every failure is a `StoreError`; two say more."""

from __future__ import annotations

from orchestrator.errors import EdgeFleetError


class StoreError(EdgeFleetError):
    """The state store cannot be opened, read or written; the message says what to do."""


class StoreUnavailable(StoreError):
    """The store does not answer: reads are served from what was last seen, writes fail.

    Retrying later can help; nothing the caller sent was wrong.
    """


class NotLeader(StoreError):
    """A leader-only write was refused: the controller's leader term is no longer current.

    Another controller leads now; this one must stop acting as the leader.
    """
