"""Choosing among ready replicas: strategies, session affinity, and what each replica showed.

Pure bookkeeping over what the router measures (in-flight requests, time to the
first byte, failures) and what nodes report (queue depth: requests waiting on the
node and inside its model runtime, which every runtime reports in the same terms);
no I/O, and a clock that tests can drive.

* `round-robin` — each replica in turn;
* `least-outstanding` — the fewest requests in flight here plus queued on the node
  and in its runtime;
* `peak-ewma` (the default) — the lowest expected wait: latency EWMA that jumps
  up to a slow sample at once and decays back over ~10 s, times the outstanding
  work plus one. A replica not measured yet counts as fast, so it gets tried;
* no balancing (`load_balancing: false`) — the first replica by node id;
  the others only take over when it fails.

A `user` on the request pins it to a replica by rendezvous hashing, so a
conversation stays on one node while that node is healthy, and only the users of
a replica that goes away move. Each replica has a circuit breaker (`circuit`):
ranking leaves open circuits out and puts one half-open replica first; the
request that actually goes to it claims its trial. A replica on the gateway's own
node (`local`) goes before all of them while its circuit lets it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from edgefleet_contract.routing import Strategy
from edgefleet_dataplane.circuit import Circuit, CircuitBreaker

DECAY_S = 10.0
"""Time constant of the latency EWMA's decay."""


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """What the router measured of one replica, as of when it was asked."""

    in_flight: int
    latency_ewma_ms: float
    circuit: Circuit
    failures: int
    """Consecutive connection failures or timeouts."""


@dataclass(slots=True)
class _Measured:
    """The running figures of one replica."""

    in_flight: int = 0
    latency_ewma_ms: float = 0.0
    updated: float = 0.0
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)


class ReadyReplica(Protocol):
    """What the balancer needs of a ready replica."""

    @property
    def node_id(self) -> str: ...
    @property
    def queue_depth(self) -> int:
        """Requests waiting for it on its node and in its runtime, as the node reported."""
        ...

    @property
    def local(self) -> bool:
        """On the gateway's own node: it ranks first."""
        ...


R = TypeVar("R", bound=ReadyReplica)


@dataclass(frozen=True, slots=True)
class Replica:
    """A ready replica known only by its node (and the queue the node reported)."""

    node_id: str
    queue_depth: int = 0
    local: bool = False


class Balancer:
    """Per-replica figures and the order in which a request tries replicas."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._measured: dict[tuple[str, str], _Measured] = {}
        self._turn: dict[str, int] = {}

    # -- what happened ---------------------------------------------------------------

    def known(self, target: str, node: str) -> ReplicaStats | None:
        """The figures for one replica, if a request has gone to it (no side effects)."""
        found = self._measured.get((target, node))
        if found is None:
            return None
        return ReplicaStats(
            in_flight=found.in_flight,
            latency_ewma_ms=found.latency_ewma_ms,
            circuit=found.breaker.state(self._clock()),
            failures=found.breaker.failures,
        )

    def claim_trial(self, target: str, node: str) -> bool:
        """Take the one trial of a half-open replica for the request about to go to it;
        False when its circuit is not half-open or the trial is taken."""
        return self._of(target, node).breaker.claim_trial(self._clock())

    def started(self, target: str, node: str) -> None:
        """A request went to the replica."""
        self._of(target, node).in_flight += 1

    def finished(self, target: str, node: str) -> None:
        """A request to the replica ended, however it ended. A trial that ended without
        an answer or a connection failure (refused, cancelled) frees the trial slot."""
        measured = self._of(target, node)
        measured.in_flight = max(measured.in_flight - 1, 0)
        measured.breaker.release_trial()

    def first_byte(self, target: str, node: str, latency_ms: float) -> None:
        """The replica answered: record its latency; a half-open circuit closes."""
        measured = self._of(target, node)
        now = self._clock()
        if not measured.updated or latency_ms >= measured.latency_ewma_ms:
            measured.latency_ewma_ms = latency_ms  # peak-sensitive: slow news counts at once
        else:
            weight = math.exp(-(now - measured.updated) / DECAY_S)
            measured.latency_ewma_ms = measured.latency_ewma_ms * weight + latency_ms * (1 - weight)
        measured.updated = now
        measured.breaker.succeeded()

    def failed(self, target: str, node: str) -> None:
        """A connection failure or timeout on the replica (not a refusal it sent)."""
        self._of(target, node).breaker.failed(self._clock())

    def advance(self, target: str) -> None:
        """A request took its turn: round-robin starts the next one a replica later."""
        self._turn[target] = self._turn.get(target, 0) + 1

    def _of(self, target: str, node: str) -> _Measured:
        return self._measured.setdefault((target, node), _Measured())

    # -- choosing (no side effects) --------------------------------------------------

    def rank(
        self,
        target: str,
        replicas: Sequence[R],
        strategy: Strategy | None,
        user: str = "",
    ) -> list[R]:
        """The replicas to try for one request, best first; open circuits left out.

        A half-open replica whose trial is not taken comes first (one per request),
        so a recovered node is noticed promptly; the request that goes to it claims
        the trial (`claim_trial`), the others stay free for the next requests. A
        `local` replica (the gateway's own node) comes before any other.
        """
        now = self._clock()
        usable: list[R] = []
        trials: list[R] = []
        for replica in replicas:
            found = self._measured.get((target, replica.node_id))
            breaker = found.breaker if found is not None else CircuitBreaker()
            if breaker.state(now) == "closed":
                usable.append(replica)
            elif breaker.trial_free(now):
                trials.append(replica)
        ordered = self._by_strategy(target, usable, strategy, now)
        if user and ordered:
            ordered.sort(key=lambda r: _rendezvous(user, r.node_id), reverse=True)
        # The gateway's own node first, whatever the strategy: no network hop (stable
        # sorts, so the others keep their order).
        trials.sort(key=_remote)
        return sorted([*trials[:1], *ordered], key=_remote)

    def _by_strategy(
        self, target: str, replicas: Sequence[R], strategy: Strategy | None, now: float
    ) -> list[R]:
        if not replicas or strategy is None:
            return list(replicas)
        if strategy == "round-robin":
            start = self._turn.get(target, 0) % len(replicas)
            return [*replicas[start:], *replicas[:start]]
        if strategy == "least-outstanding":
            return sorted(replicas, key=lambda r: (self._outstanding(target, r), r.node_id))
        return sorted(replicas, key=lambda r: (self._cost(target, r, now), r.node_id))

    def _outstanding(self, target: str, replica: ReadyReplica) -> int:
        found = self._measured.get((target, replica.node_id))
        return (found.in_flight if found is not None else 0) + replica.queue_depth

    def _cost(self, target: str, replica: ReadyReplica, now: float) -> float:
        found = self._measured.get((target, replica.node_id))
        if found is None:
            return 0.0
        latency = found.latency_ewma_ms
        if found.updated:
            latency *= math.exp(-(now - found.updated) / DECAY_S)
        return latency * (self._outstanding(target, replica) + 1)


def _remote(replica: ReadyReplica) -> bool:
    return not replica.local


def _rendezvous(user: str, node: str) -> int:
    digest = hashlib.blake2b(f"{user}\0{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
