"""Choosing among ready replicas: strategies, session affinity, circuit breakers, retry budget.

Pure bookkeeping over what the router measures (in-flight requests, time to the
first byte, failures) and what nodes report (queue depth); no I/O, and a clock
that tests can drive.

* `round-robin` — each replica in turn;
* `least-outstanding` — the fewest requests in flight here plus queued on the node;
* `peak-ewma` (the default) — the lowest expected wait: latency EWMA that jumps
  up to a slow sample at once and decays back over ~10 s, times the outstanding
  work plus one. A replica not measured yet counts as fast, so it gets tried;
* no balancing (`load_balancing: false`) — the first replica by node id;
  the others only take over when it fails.

A `user` on the request pins it to a replica by rendezvous hashing, so a
conversation stays on one node while that node is healthy, and only the users of
a replica that goes away move.

A replica's circuit opens after consecutive connection failures or timeouts: it
gets no requests for a cool-down, then one trial request (half-open) that closes
the circuit on success or opens it again. Retries draw on a budget that grows
with requests (a fraction of them, plus a small floor), so an outage cannot turn
into a retry storm.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from orchestrator.manifest.desired import Strategy

Circuit = Literal["closed", "open", "half-open"]

DECAY_S = 10.0
"""Time constant of the latency EWMA's decay."""
FAILURES_TO_OPEN = 3
COOL_DOWN_S = 5.0
RETRY_RATIO = 0.2
"""Retries allowed per request, on average."""
RETRY_FLOOR = 3.0
"""Retries always available after a quiet period (the budget's cap is larger)."""
RETRY_CAP = 20.0


@dataclass(slots=True)
class ReplicaStats:
    """What the router measured of one replica."""

    in_flight: int = 0
    latency_ewma_ms: float = 0.0
    updated: float = 0.0
    failures: int = 0
    """Consecutive connection failures or timeouts."""
    circuit: Circuit = "closed"
    opened_at: float = 0.0
    trial_out: bool = False
    """Half-open: the one trial request is on its way."""


class ReadyReplica(Protocol):
    """What the balancer needs of a ready replica."""

    @property
    def node_id(self) -> str: ...
    @property
    def queue_depth(self) -> int:
        """Requests waiting for it on its node, as the node last reported."""
        ...


R = TypeVar("R", bound=ReadyReplica)


@dataclass(frozen=True, slots=True)
class Replica:
    """A ready replica known only by its node (and the queue the node reported)."""

    node_id: str
    queue_depth: int = 0


class Balancer:
    """Per-replica statistics and the choice of replica order for a request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stats: dict[tuple[str, str], ReplicaStats] = {}
        self._turn: dict[str, int] = {}
        self._budget = RETRY_FLOOR

    # -- statistics ------------------------------------------------------------------

    def stats(self, target: str, node: str) -> ReplicaStats:
        """The figures for one replica (created on first use)."""
        return self._stats.setdefault((target, node), ReplicaStats())

    def known(self, target: str, node: str) -> ReplicaStats | None:
        """The figures for one replica, if it has served anything."""
        stats = self._stats.get((target, node))
        if stats is not None:
            self._refresh(stats)
        return stats

    def started(self, target: str, node: str) -> None:
        """A request went to the replica."""
        self.stats(target, node).in_flight += 1

    def finished(self, target: str, node: str) -> None:
        """A request to the replica ended, however it ended. A trial that ended without
        an answer or a connection failure (refused, cancelled) frees the trial slot."""
        stats = self.stats(target, node)
        stats.in_flight = max(stats.in_flight - 1, 0)
        stats.trial_out = False

    def first_byte(self, target: str, node: str, latency_ms: float) -> None:
        """The replica answered: record its latency; a half-open circuit closes."""
        stats = self.stats(target, node)
        now = self._clock()
        if not stats.updated or latency_ms >= stats.latency_ewma_ms:
            stats.latency_ewma_ms = latency_ms  # peak-sensitive: slow news counts at once
        else:
            weight = math.exp(-(now - stats.updated) / DECAY_S)
            stats.latency_ewma_ms = stats.latency_ewma_ms * weight + latency_ms * (1 - weight)
        stats.updated = now
        stats.failures = 0
        stats.circuit = "closed"
        stats.trial_out = False

    def failed(self, target: str, node: str) -> None:
        """A connection failure or timeout on the replica (not a refusal it sent)."""
        stats = self.stats(target, node)
        stats.failures += 1
        stats.trial_out = False
        if stats.circuit == "half-open" or stats.failures >= FAILURES_TO_OPEN:
            stats.circuit = "open"
            stats.opened_at = self._clock()

    def _refresh(self, stats: ReplicaStats) -> None:
        if stats.circuit == "open" and self._clock() - stats.opened_at >= COOL_DOWN_S:
            stats.circuit = "half-open"

    # -- retry budget ----------------------------------------------------------------

    def request(self) -> None:
        """A new request arrived: it earns a fraction of a retry."""
        self._budget = min(self._budget + RETRY_RATIO, RETRY_CAP)

    def may_retry(self) -> bool:
        """Take one retry from the budget, if there is one."""
        if self._budget < 1.0:
            return False
        self._budget -= 1.0
        return True

    # -- choosing --------------------------------------------------------------------

    def order(
        self,
        target: str,
        replicas: Sequence[R],
        strategy: Strategy | None,
        user: str = "",
    ) -> list[R]:
        """The replicas to try for one request, best first; open circuits left out.

        A half-open replica comes first while its trial is not taken (ordering marks
        it taken), so a recovered node is noticed promptly.
        """
        usable: list[R] = []
        trials: list[R] = []
        for replica in replicas:
            stats = self.stats(target, replica.node_id)
            self._refresh(stats)
            if stats.circuit == "open":
                continue
            if stats.circuit == "half-open":
                if not stats.trial_out:
                    trials.append(replica)
                continue
            usable.append(replica)
        ordered = self._rank(target, usable, strategy)
        if user and ordered:
            ordered.sort(key=lambda r: _rendezvous(user, r.node_id), reverse=True)
        if not trials:
            return ordered
        # One trial per request: the first half-open replica goes first and is marked
        # taken; the others stay free for the next requests.
        self.stats(target, trials[0].node_id).trial_out = True
        return [trials[0], *ordered]

    def _rank(self, target: str, replicas: Sequence[R], strategy: Strategy | None) -> list[R]:
        if not replicas or strategy is None:
            return list(replicas)
        if strategy == "round-robin":
            turn = self._turn.get(target, 0)
            self._turn[target] = turn + 1
            start = turn % len(replicas)
            return [*replicas[start:], *replicas[:start]]
        if strategy == "least-outstanding":
            return sorted(replicas, key=lambda r: (self._outstanding(target, r), r.node_id))
        return sorted(replicas, key=lambda r: (self._cost(target, r), r.node_id))

    def _outstanding(self, target: str, replica: ReadyReplica) -> int:
        return self.stats(target, replica.node_id).in_flight + replica.queue_depth

    def _cost(self, target: str, replica: ReadyReplica) -> float:
        stats = self.stats(target, replica.node_id)
        latency = stats.latency_ewma_ms
        if stats.updated:
            latency *= math.exp(-(self._clock() - stats.updated) / DECAY_S)
        return latency * (self._outstanding(target, replica) + 1)


def _rendezvous(user: str, node: str) -> int:
    digest = hashlib.blake2b(f"{user}\0{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
