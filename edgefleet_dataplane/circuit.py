"""A replica's circuit breaker: closed, open after repeated failures, half-open for one trial.

A circuit opens after consecutive connection failures or timeouts (not refusals the
node sent): the replica gets no requests for a cool-down. Then it is half-open: one
trial request may go to it, which closes the circuit on an answer or opens it again
on a failure. A trial that ends without a verdict (refused, cancelled) frees the
slot for the next request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Circuit = Literal["closed", "open", "half-open"]

FAILURES_TO_OPEN = 3
COOL_DOWN_S = 5.0


@dataclass(slots=True)
class CircuitBreaker:
    """One replica's circuit; every question takes the time it is asked at."""

    failures: int = 0
    """Consecutive connection failures or timeouts."""
    opened_at: float | None = None
    """When the circuit last opened; None while it is closed."""
    trial_out: bool = False
    """Half-open: the one trial request is on its way."""

    def state(self, now: float) -> Circuit:
        """Closed, open, or half-open once the cool-down has passed."""
        if self.opened_at is None:
            return "closed"
        return "half-open" if now - self.opened_at >= COOL_DOWN_S else "open"

    def trial_free(self, now: float) -> bool:
        """Half-open with its one trial not taken yet."""
        return self.state(now) == "half-open" and not self.trial_out

    def claim_trial(self, now: float) -> bool:
        """Take the half-open circuit's trial; False when it is not half-open or taken."""
        if not self.trial_free(now):
            return False
        self.trial_out = True
        return True

    def release_trial(self) -> None:
        """The trial ended without a verdict: the next request may take it."""
        self.trial_out = False

    def succeeded(self) -> None:
        """The replica answered: the circuit closes."""
        self.failures = 0
        self.opened_at = None
        self.trial_out = False

    def failed(self, now: float) -> None:
        """A connection failure or timeout: a failed trial, or one too many, opens it."""
        half_open = self.state(now) == "half-open"
        self.failures += 1
        self.trial_out = False
        if half_open or self.failures >= FAILURES_TO_OPEN:
            self.opened_at = now
