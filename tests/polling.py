"""Waiting for a condition in tests that drive real processes: poll, then explain."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    explain: Callable[[], str],
    interval: float = 0.05,
) -> float:
    """Poll `check` until true; returns the seconds it took. After `timeout` seconds, an
    AssertionError naming `what`, with `explain()` (logs, states) attached."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{explain()}")
        time.sleep(interval)
