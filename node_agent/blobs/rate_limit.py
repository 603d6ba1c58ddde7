"""A token bucket that keeps a node's downloads under `max_download_rate`.

A taker may ask for more than the bucket holds (a peer's chunk is 256 KiB whatever
the rate): the bucket goes into debt and the taker waits until it is paid back, so
over any stretch the bytes taken stay within rate * time + burst.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

MIN_BURST = 64 * 1024


class TokenBucket:
    """Bytes per second, shared by every download it is given to (0: no limit)."""

    def __init__(
        self,
        rate_bps: int,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._burst_given = burst
        self.rate = 0
        self.burst = 0
        self.set_rate(rate_bps)
        self._tokens = float(self.burst)
        self._stamp = clock()

    def set_rate(self, rate_bps: int) -> None:
        """Change the rate (0: none); the burst is one second's worth, at least 64 KiB."""
        self.rate = max(0, rate_bps)
        self.burst = self._burst_given or max(self.rate, MIN_BURST)

    def reserve(self, n_bytes: int) -> float:
        """Take `n_bytes` now and return the seconds to wait before using them."""
        if self.rate == 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= n_bytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def take(self, n_bytes: int) -> None:
        """Wait until `n_bytes` may move."""
        wait = self.reserve(n_bytes)
        if wait > 0:
            await asyncio.sleep(wait)
