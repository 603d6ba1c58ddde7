"""Waiting longer after each failure in a row, up to a ceiling."""

from __future__ import annotations

import asyncio


class Backoff:
    """Delays that start at `first` and grow by `factor` per failure up to `most`.

    `next()` gives the delay to wait now and grows the next one; `reset()` after a
    success starts again from `first`.
    """

    def __init__(self, first: float, most: float, factor: float = 2.0) -> None:
        if not 0 < first <= most:
            raise ValueError("a backoff needs 0 < first <= most")
        if factor < 1:
            raise ValueError("a backoff's factor must be at least 1")
        self.first = first
        self.most = most
        self.factor = factor
        self._delay = first

    def next(self) -> float:
        """The delay to wait now; the following one is longer (until the ceiling)."""
        delay = self._delay
        self._delay = min(self._delay * self.factor, self.most)
        return delay

    def reset(self) -> None:
        """Start again from the first delay (after a success)."""
        self._delay = self.first

    async def wait(self) -> float:
        """Sleep for the next delay; returns how long that was."""
        delay = self.next()
        await asyncio.sleep(delay)
        return delay
