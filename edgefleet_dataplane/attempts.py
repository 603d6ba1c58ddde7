"""One request's attempts on replicas: what was tried, what refused, and how it ends.

The router makes one `RouteAttempts` per request and asks it, after each failed
attempt, whether another replica may be tried; when none can serve, `give_up`
says why in one `RouteError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from edgefleet_contract.routing import TargetKind
from edgefleet_dataplane.route_error import RETRIABLE, Exhausted, RouteError

MIN_TIMEOUT_S = 0.001
"""What an attempt gets when the request's deadline is (almost) spent."""


@dataclass(slots=True)
class RouteAttempts:
    """The attempts of one request on the replicas of one target."""

    target: str
    kind: TargetKind
    deadline: float
    """On the `clock`'s scale."""
    clock: Callable[[], float] = time.monotonic
    ready: int = 0
    """Ready replicas when the request arrived."""
    ranked: int = 0
    """Of those, the ones whose circuit let the request try them."""
    tried: list[str] = field(default_factory=list)
    """Node ids, in the order they were tried."""
    refused_full: int = 0
    """Attempts a node refused because its queue was full."""
    last_error: str = ""
    answered: bool = False
    """An attempt ran to its end: the request is served."""

    @property
    def what(self) -> str:
        """The target as messages name it."""
        return f"{self.kind} `{self.target}`"

    def remaining(self) -> float:
        """Seconds left before the request's deadline (never zero: gRPC needs some)."""
        return max(self.deadline - self.clock(), MIN_TIMEOUT_S)

    def expired(self) -> bool:
        """Whether the request's deadline has passed."""
        return self.clock() >= self.deadline

    def failed(
        self, node: str, code: grpc.StatusCode, details: str, sent_any: bool
    ) -> RouteError | None:
        """Record an attempt that failed with `code` and `details`; the error to give the
        caller when another replica must not be tried, None when it may."""
        self.last_error = f"{node}: {details or code.name}"
        if sent_any:
            return RouteError(
                grpc.StatusCode.UNAVAILABLE,
                f"{self.what} broke off on {node} after it had started answering "
                f"({details}); the outcome is unknown, so the request was not retried",
            )
        if code not in RETRIABLE:
            return RouteError(code, details or code.name)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            self.refused_full += 1
        return None


def budget_spent(attempts: RouteAttempts) -> RouteError:
    """The request failed and the retry budget allows no other attempt."""
    return RouteError(
        grpc.StatusCode.UNAVAILABLE,
        f"{attempts.what} failed on {', '.join(attempts.tried)} ({attempts.last_error}) and "
        "the retry budget is spent (too many failures across requests); not retried",
        "retry-budget-spent",
    )


def give_up(attempts: RouteAttempts) -> RouteError:
    """Why no replica served the request, once every one it could try was tried."""
    what, tried = attempts.what, attempts.tried
    if not tried:
        if attempts.ready and not attempts.ranked:
            return RouteError(
                grpc.StatusCode.UNAVAILABLE,
                f"no replica of {what} is reachable: every circuit is open "
                "after repeated connection failures",
                "circuits-open",
            )
        return RouteError(
            grpc.StatusCode.UNAVAILABLE, f"no ready replica of {what}", "no-ready-replica"
        )
    all_full = attempts.refused_full == len(tried)
    exhausted: Exhausted | None = None  # the request's deadline is spent: not elsewhere
    if not attempts.expired():
        exhausted = "queues-full" if all_full else "replicas-failed"
    if all_full:
        return RouteError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"every replica of {what} has a full queue (tried {', '.join(tried)}); "
            "try again shortly",
            exhausted,
        )
    return RouteError(
        grpc.StatusCode.UNAVAILABLE,
        f"every replica of {what} failed (tried {', '.join(tried)}; last: {attempts.last_error})",
        exhausted,
    )
