"""Download progress: bytes done, rate over the last seconds, time left."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

RATE_WINDOW_S = 5.0
REPORT_EVERY_S = 0.5


class ProgressFn(Protocol):
    """Told about a download now and then and once at its end."""

    def __call__(
        self, bytes_done: int, total: int | None, rate: float, eta: float | None, source: str
    ) -> None: ...


class ProgressMeter:
    """Turns a stream of byte counts into rate and ETA, and reports at most every
    REPORT_EVERY_S seconds (always on `final`)."""

    def __init__(
        self, report: ProgressFn | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._report = report
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self._last_report = float("-inf")

    def rate(self, now: float, bytes_done: int) -> float:
        """Bytes per second over the last RATE_WINDOW_S seconds (0 until measurable)."""
        self._samples.append((now, bytes_done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        first_time, first_bytes = self._samples[0]
        elapsed = now - first_time
        return (bytes_done - first_bytes) / elapsed if elapsed > 0 else 0.0

    def update(
        self, bytes_done: int, total: int | None, source: str, *, final: bool = False
    ) -> None:
        """Record the bytes done so far; report if it is time."""
        now = self._clock()
        rate = self.rate(now, bytes_done)
        if self._report is None or (not final and now - self._last_report < REPORT_EVERY_S):
            return
        self._last_report = now
        eta = max(0, total - bytes_done) / rate if total and rate > 0 else None
        if final and total is not None and bytes_done >= total:
            eta = 0.0
        try:
            self._report(bytes_done, total, rate, eta, source)
        except Exception:  # a broken report must not look like a failing source
            log.exception("download progress report failed")

    def restart(self) -> None:
        """Forget the samples (the bytes done went back to 0)."""
        self._samples.clear()
