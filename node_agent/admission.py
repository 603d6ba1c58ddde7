"""Admission of requests on a node: bounded queues, limited concurrency, load figures.

A request for an agent (or a model alias) first takes a place in that target's
queue — refused with QueueFull when the queue is full, so a busy node pushes
back instead of growing without bound — then waits for a node-wide agent slot
(`max_concurrent_agents`) and a slot on its model: as many as its runtime runs at
once (a llama.cpp server's slots, Ollama's parallel setting), so the runtime never
queues what the node could count and bound. The waiting count is the queue depth
the node reports.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from edgefleet_contract.desired import NodeLimits
from node_agent.errors import QueueFull

EWMA_ALPHA = 0.3
"""Weight of the newest sample: recent enough to track a slowing node within a few requests."""


@dataclass(slots=True)
class TargetLoad:
    """What one agent or model is doing: queue, work in progress, latency."""

    waiting: int = 0
    in_flight: int = 0
    latency_ewma_ms: float = 0.0
    requests_total: int = 0
    failures_total: int = 0
    last_used: float = field(default_factory=time.time)

    def observe_latency(self, ms: float) -> None:
        """Fold one time-to-first-chunk sample into the EWMA."""
        if self.latency_ewma_ms == 0.0:
            self.latency_ewma_ms = ms
        else:
            self.latency_ewma_ms += EWMA_ALPHA * (ms - self.latency_ewma_ms)


class Slots:
    """A resizable counting semaphore, first come first served; None means unlimited.

    A freed slot is handed to the longest waiter at once (counted as used from that
    moment), so a newcomer never overtakes a request that waited, and a waiter
    cancelled just as it was handed a slot passes it on instead of losing it.
    """

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._used = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def limit(self) -> int | None:
        """The current limit (None: unlimited)."""
        return self._limit

    def set_limit(self, limit: int | None) -> None:
        """Change the limit; waiters get slots at once (running work is never cut)."""
        self._limit = limit
        self._hand_over()

    def _free(self) -> bool:
        return self._limit is None or self._used < self._limit

    def _hand_over(self) -> None:
        while self._waiters and self._free():
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped; it takes nothing
                self._used += 1
                waiter.set_result(None)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block."""
        if not self._waiters and self._free():
            self._used += 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # handed a slot as it was cancelled: pass it on
                else:
                    with contextlib.suppress(ValueError):  # already skipped
                        self._waiters.remove(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._used -= 1
        self._hand_over()


class Admission:
    """Queues per target, a node-wide agent limit, and per-model slots."""

    def __init__(
        self,
        parallelism: Callable[[str], int | None],
        max_queue: int = NodeLimits().max_queue_per_agent,
        max_concurrent_agents: int | None = None,
    ) -> None:
        """`parallelism(model)` says how many requests a model serves at once (None: any)."""
        self.max_queue = max_queue
        self._parallelism = parallelism
        self._agent_slots = Slots(max_concurrent_agents)
        self._model_slots: dict[str, Slots] = {}
        self.loads: dict[str, TargetLoad] = {}

    async def configure(self, max_queue: int, max_concurrent_agents: int | None) -> None:
        """Apply new limits from the desired state."""
        self.max_queue = max_queue
        self._agent_slots.set_limit(max_concurrent_agents)

    def _model(self, model: str) -> Slots:
        # Read at every request: a model's runtime (and so its parallelism) is known
        # only once the catalog resolved it, and changes when it is reloaded elsewhere.
        limit = self._parallelism(model)
        slots = self._model_slots.get(model)
        if slots is None:
            slots = self._model_slots[model] = Slots(limit)
        elif slots.limit != limit:
            slots.set_limit(limit)
        return slots

    def forget(self, target: str) -> None:
        """Drop the figures of a target that is gone."""
        self.loads.pop(target, None)
        self._model_slots.pop(target, None)

    def load(self, target: str) -> TargetLoad:
        """The figures of one target (created on first use)."""
        load = self.loads.get(target)
        if load is None:
            load = self.loads[target] = TargetLoad()
        return load

    @contextlib.asynccontextmanager
    async def admit(self, target: str, model: str, *, agent: bool) -> AsyncIterator[TargetLoad]:
        """Queue for, then hold, what one request needs; QueueFull when the queue is full."""
        load = self.load(target)
        if load.waiting >= self.max_queue:
            raise QueueFull(
                f"`{target}` has {load.waiting} requests waiting (the limit is "
                f"{self.max_queue}); retry later or on another node"
            )
        load.waiting += 1
        entered = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                if agent:
                    await stack.enter_async_context(self._agent_slots.hold())
                await stack.enter_async_context(self._model(model).hold())
                load.waiting -= 1
                entered = True
                load.in_flight += 1
                load.requests_total += 1
                load.last_used = time.time()
                try:
                    yield load
                except BaseException:
                    load.failures_total += 1
                    raise
                finally:
                    load.in_flight -= 1
                    load.last_used = time.time()
        finally:
            if not entered:
                load.waiting -= 1

    def totals(self) -> tuple[int, int, float]:
        """(in flight, waiting, mean latency EWMA over busy-ever targets) for the whole node."""
        loads = list(self.loads.values())
        in_flight = sum(load.in_flight for load in loads)
        waiting = sum(load.waiting for load in loads)
        sampled = [load.latency_ewma_ms for load in loads if load.latency_ewma_ms]
        return in_flight, waiting, (sum(sampled) / len(sampled) if sampled else 0.0)
