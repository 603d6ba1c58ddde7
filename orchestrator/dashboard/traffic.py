"""What the gateway served, per agent and model, over the last minutes: requests per second
and p50/p95 latency in 5 s steps, for the dashboard's charts.

The router's balancer already sees every request start on a replica and its time to the
first byte; `CountingBalancer` is that balancer, also handing both to a `Traffic` record.
Steps are kept by wall-clock time (only the last `WINDOW_S`), so nothing runs in the
background: a step with no request reads as zero requests and no latency.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgefleet_dataplane.balancer import Balancer

WINDOW_S = 300
STEP_S = 5
MAX_SAMPLES = 2048
"""Latencies kept per target and step; past that, a uniform sample of them."""


@dataclass(slots=True)
class _Step:
    """One target's requests and latencies in one step."""

    requests: int = 0
    answered: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def add_latency(self, latency_ms: float, rng: random.Random) -> None:
        self.answered += 1
        if len(self.latencies_ms) < MAX_SAMPLES:
            self.latencies_ms.append(latency_ms)
            return
        slot = rng.randrange(self.answered)  # reservoir sampling: each kept alike
        if slot < MAX_SAMPLES:
            self.latencies_ms[slot] = latency_ms


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value at `fraction` (0..1) of sorted values (nearest rank)."""
    rank = max(int(fraction * len(sorted_values) + 0.999999) - 1, 0)
    return sorted_values[min(rank, len(sorted_values) - 1)]


class Traffic:
    """Requests and latencies per target, in steps of `STEP_S` over `WINDOW_S`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._steps: dict[str, dict[int, _Step]] = {}
        self._rng = random.Random()

    def started(self, target: str) -> None:
        """A request went to a replica of `target`."""
        self._step(target).requests += 1

    def answered(self, target: str, latency_ms: float) -> None:
        """A replica of `target` answered, its first byte after `latency_ms`."""
        self._step(target).add_latency(latency_ms, self._rng)

    def _step(self, target: str) -> _Step:
        now_step = int(self._clock() // STEP_S)
        steps = self._steps.setdefault(target, {})
        found = steps.get(now_step)
        if found is None:
            found = steps[now_step] = _Step()
            self._forget(now_step)
        return found

    def _forget(self, now_step: int) -> None:
        """Drop steps that fell out of the window (and targets with none left)."""
        oldest = now_step - WINDOW_S // STEP_S
        for target in list(self._steps):
            steps = self._steps[target]
            for number in [n for n in steps if n <= oldest]:
                del steps[number]
            if not steps:
                del self._steps[target]

    def series(self) -> dict[str, list[dict[str, Any]]]:
        """Per target with requests in the window: one point per complete step, oldest
        first: `t` (the step's end, unix seconds), `rps`, `p50_ms` and `p95_ms` (None for a
        step with no answer)."""
        now_step = int(self._clock() // STEP_S)
        self._forget(now_step)
        numbers = range(now_step - WINDOW_S // STEP_S + 1, now_step)
        return {
            target: [_point(number, steps.get(number)) for number in numbers]
            for target, steps in sorted(self._steps.items())
        }


def _point(number: int, step: _Step | None) -> dict[str, Any]:
    latencies = sorted(step.latencies_ms) if step is not None else []
    return {
        "t": (number + 1) * STEP_S,
        "rps": (step.requests if step is not None else 0) / STEP_S,
        "p50_ms": round(percentile(latencies, 0.5), 3) if latencies else None,
        "p95_ms": round(percentile(latencies, 0.95), 3) if latencies else None,
    }


class CountingBalancer(Balancer):
    """The router's balancer, also recording each request and first byte in `traffic`."""

    def __init__(self, traffic: Traffic, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self.traffic = traffic

    def started(self, target: str, node: str) -> None:
        super().started(target, node)
        self.traffic.started(target)

    def first_byte(self, target: str, node: str, latency_ms: float) -> None:
        super().first_byte(target, node, latency_ms)
        self.traffic.answered(target, latency_ms)
