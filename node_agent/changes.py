"""A version counter that watchers can wait on: the node's "something changed" signal.

Watchers never receive the change itself, only that one happened; they then read
the whole current status. That keeps the status stream level-triggered: a
watcher that misses a change still converges on the next one or heartbeat.
"""

from __future__ import annotations

import asyncio


class ChangeSignal:
    """Counts changes; `wait` returns when the count moves past what a watcher saw."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        """Record a change and wake every waiter."""
        self.version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, seen: int, timeout: float) -> bool:
        """True when a change newer than `seen` happened, False on timeout."""
        if self.version > seen:
            return True
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return self.version > seen
        return True
