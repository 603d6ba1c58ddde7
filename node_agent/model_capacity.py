"""What each ready model can take on now, for the node's status and metrics.

Every runtime reports in the same terms (`ModelCapacity`: slots in use of total,
requests queued inside it, memory). A figure the runtime does not give is filled
in from what the node knows: the requests it sent that have not ended count as
busy. Readings are shared for a short while, so several status watchers cost the
runtimes one reading.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from edgefleet.v1 import common_pb2
from node_agent.metrics import NodeMetrics
from node_agent.models import ModelManager
from node_agent.runtimes.base import ModelCapacity, Runtime

log = logging.getLogger(__name__)

MAX_AGE_S = 0.5
"""How long a reading is reused."""
READ_TIMEOUT_S = 1.0
"""A runtime that takes longer leaves its figures to what the node knows."""


@dataclass(frozen=True, slots=True)
class Capacity:
    """One model's figures, every one known (unknown totals stay None)."""

    slots_total: int | None
    slots_busy: int
    queued: int
    memory_bytes: int | None

    def proto(self) -> common_pb2.RuntimeCapacity:
        """As the node's status carries it."""
        message = common_pb2.RuntimeCapacity(slots_busy=self.slots_busy, queued=self.queued)
        if self.slots_total is not None:
            message.slots_total = self.slots_total
        if self.memory_bytes is not None:
            message.memory_bytes = self.memory_bytes
        return message


def node_load_figures(capacities: Mapping[str, Capacity]) -> tuple[int, int, int]:
    """(slots total over models with a slot count, slots busy, queued in runtimes)."""
    total = sum(c.slots_total for c in capacities.values() if c.slots_total is not None)
    busy = sum(c.slots_busy for c in capacities.values())
    queued = sum(c.queued for c in capacities.values())
    return total, busy, queued


class CapacityReader:
    """Reads every ready model's capacity from its runtime, shared for `MAX_AGE_S`."""

    def __init__(self, models: ModelManager, metrics: NodeMetrics) -> None:
        self._models = models
        self._metrics = metrics
        self._last: dict[str, Capacity] = {}
        self._read_at = -MAX_AGE_S
        self._lock = asyncio.Lock()
        self._published: set[str] = set()

    async def read(self) -> dict[str, Capacity]:
        """Capacity by alias, for the models that are ready now."""
        async with self._lock:
            if time.monotonic() - self._read_at >= MAX_AGE_S:
                self._last = await self._read_all()
                self._read_at = time.monotonic()
                self._publish(self._last)
            return dict(self._last)

    async def _read_all(self) -> dict[str, Capacity]:
        ready = [slot for slot in self._models.slots() if slot.state == "ready"]
        runtimes = self._models.started_runtimes()
        readings = await asyncio.gather(
            *(self._reading(runtimes.get(slot.runtime), slot.want.alias) for slot in ready)
        )
        return {
            slot.want.alias: Capacity(
                slots_total=reading.slots_total,
                slots_busy=slot.in_use if reading.slots_busy is None else reading.slots_busy,
                queued=reading.queued or 0,
                memory_bytes=reading.memory_bytes,
            )
            for slot, reading in zip(ready, readings, strict=True)
        }

    async def _reading(self, runtime: Runtime | None, alias: str) -> ModelCapacity:
        if runtime is None:
            return ModelCapacity()
        try:
            return await asyncio.wait_for(runtime.capacity(alias), READ_TIMEOUT_S)
        except TimeoutError:
            return ModelCapacity()
        except Exception:  # a runtime's bug must not stop the node's status
            log.exception("reading a model's capacity failed", extra={"model": alias})
            return ModelCapacity()

    def _publish(self, capacities: Mapping[str, Capacity]) -> None:
        for alias in self._published - set(capacities):
            self._metrics.forget_capacity(alias)
        for alias, capacity in capacities.items():
            self._metrics.set_capacity(
                alias, capacity.slots_total, capacity.slots_busy, capacity.queued
            )
        self._published = set(capacities)
