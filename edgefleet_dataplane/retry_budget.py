"""The retry budget: retries grow with requests, so an outage cannot turn into a retry storm.

Every request earns a fraction of a retry; a retry spends a whole one. A small floor
is always there after a quiet period, and the budget never grows past a cap.
"""

from __future__ import annotations

RETRY_RATIO = 0.2
"""Retries allowed per request, on average."""
RETRY_FLOOR = 3.0
"""Retries always available after a quiet period (the budget's cap is larger)."""
RETRY_CAP = 20.0


class RetryBudget:
    """Retries left across every request of one router."""

    def __init__(self) -> None:
        self._left = RETRY_FLOOR

    def request(self) -> None:
        """A new request arrived: it earns a fraction of a retry."""
        self._left = min(self._left + RETRY_RATIO, RETRY_CAP)

    def may_retry(self) -> bool:
        """Take one retry from the budget, if there is one."""
        if self._left < 1.0:
            return False
        self._left -= 1.0
        return True
