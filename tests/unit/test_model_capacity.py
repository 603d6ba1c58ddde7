"""The node's reading of its models' capacity, and admission that follows a model's slots.

`SlotRuntime` is a test double of a runtime adapter: it serves any model at once and
reports whatever capacity the test gives it (or hangs, or fails).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from edgefleet_contract.desired import ModelWant, NodeLimits
from node_agent import model_capacity
from node_agent.admission import Admission
from node_agent.catalog import Catalog, CatalogEntry
from node_agent.errors import NotFound
from node_agent.metrics import NodeMetrics
from node_agent.model_capacity import CapacityReader, node_load_figures
from node_agent.models import ModelManager
from node_agent.runtimes.base import (
    LoadedModel,
    ModelCapacity,
    ModelEndpoint,
    ModelSource,
    ProgressCallback,
    Runtime,
    RuntimeHealth,
    RuntimeName,
    StateListener,
)

pytestmark = pytest.mark.timeout(20)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


class SlotRuntime(Runtime):
    """Serves every model; reports `reports[alias]` as its capacity (an exception: raises
    it; None: never answers)."""

    name: RuntimeName = "vllm"

    def __init__(self, listener: StateListener | None = None) -> None:
        super().__init__(listener)
        self.reports: dict[str, ModelCapacity | Exception | None] = {}
        self.model_slots: dict[str, int] = {}
        self.served: set[str] = set()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.served.clear()

    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        self.served.add(source.alias)
        return LoadedModel(self.endpoint(source.alias))

    async def unload(self, alias: str) -> None:
        self.served.discard(alias)

    async def loaded(self) -> list[str]:
        return sorted(self.served)

    async def health(self) -> RuntimeHealth:
        return RuntimeHealth(True, "slots")

    def endpoint(self, alias: str) -> ModelEndpoint:
        if alias not in self.served:
            raise NotFound(alias)
        return ModelEndpoint(f"http://127.0.0.1:9/{alias}/v1", alias)

    async def memory_used(self) -> int:
        return 0

    def slots(self, alias: str) -> int | None:
        return self.model_slots.get(alias)

    async def capacity(self, alias: str) -> ModelCapacity:
        report = self.reports.get(alias, ModelCapacity())
        if report is None:
            await asyncio.Event().wait()  # a runtime that never answers
        if isinstance(report, Exception):
            raise report
        assert isinstance(report, ModelCapacity)
        return report


async def ready_models(runtime: SlotRuntime, *aliases: str) -> tuple[ModelManager, NodeMetrics]:
    catalog = Catalog({a: CatalogEntry(runtime="vllm", source=a) for a in aliases})
    metrics = NodeMetrics()
    manager = ModelManager(catalog, lambda name, listener: runtime, metrics, lambda: None)
    await manager.reconcile([ModelWant(alias=a) for a in aliases], NodeLimits())
    for alias in aliases:
        slot = manager.slot(alias)
        assert slot is not None
        await asyncio.wait_for(slot.ready.wait(), 5)
    return manager, metrics


def test_reported_figures_reach_the_status_and_the_metrics() -> None:
    async def scenario() -> None:
        runtime = SlotRuntime()
        runtime.reports["a"] = ModelCapacity(4, 3, 2, 300)
        runtime.reports["b"] = ModelCapacity(slots_busy=5, queued=1)
        models, metrics = await ready_models(runtime, "a", "b")
        try:
            read = await CapacityReader(models, metrics).read()
        finally:
            await models.close()

        assert read["a"].proto().slots_total == 4
        assert read["a"].proto().memory_bytes == 300
        assert not read["b"].proto().HasField("slots_total"), "no fixed slot count"
        assert not read["b"].proto().HasField("memory_bytes")
        assert node_load_figures(read) == (4, 8, 3)
        sample = metrics.registry.get_sample_value
        assert sample("edgefleet_model_slots", {"model": "a", "state": "busy"}) == 3
        assert sample("edgefleet_model_slots", {"model": "a", "state": "total"}) == 4
        assert sample("edgefleet_model_slots", {"model": "b", "state": "total"}) is None
        assert sample("edgefleet_runtime_queue_depth", {"model": "b"}) == 1

    run(scenario)


def test_what_a_runtime_does_not_say_is_what_the_node_knows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(model_capacity, "READ_TIMEOUT_S", 0.1)

    async def scenario() -> None:
        runtime = SlotRuntime()
        runtime.reports["silent"] = ModelCapacity(slots_total=2)
        runtime.reports["hung"] = None
        runtime.reports["broken"] = RuntimeError("a bug in the adapter")
        models, metrics = await ready_models(runtime, "silent", "hung", "broken")
        try:
            async with models.use("silent", 1), models.use("hung", 1), models.use("hung", 1):
                read = await CapacityReader(models, metrics).read()
        finally:
            await models.close()

        assert (read["silent"].slots_total, read["silent"].slots_busy) == (2, 1)
        assert (read["hung"].slots_total, read["hung"].slots_busy) == (None, 2)
        assert (read["broken"].slots_busy, read["broken"].queued) == (0, 0)

    run(scenario)


def test_a_reading_is_shared_for_a_moment_and_gone_models_leave_the_metrics() -> None:
    async def scenario() -> None:
        runtime = SlotRuntime()
        runtime.reports["a"] = ModelCapacity(4, 1, 0)
        models, metrics = await ready_models(runtime, "a")
        reader = CapacityReader(models, metrics)
        try:
            first = await reader.read()
            runtime.reports["a"] = ModelCapacity(4, 4, 0)
            assert await reader.read() == first, "read again within MAX_AGE_S"
            await models.unload_now("a")
            await asyncio.sleep(model_capacity.MAX_AGE_S)
            assert await reader.read() == {}, "only ready models have a capacity"
        finally:
            await models.close()
        sample = metrics.registry.get_sample_value
        assert sample("edgefleet_model_slots", {"model": "a", "state": "busy"}) is None

    run(scenario)


def test_admission_lets_as_many_requests_through_as_the_model_has_slots() -> None:
    async def scenario() -> None:
        runtime = SlotRuntime()
        runtime.model_slots["a"] = 2
        models, _ = await ready_models(runtime, "a")
        admission = Admission(models.parallel_requests)
        entered = asyncio.Event()
        release = asyncio.Event()
        running = 0

        async def request() -> None:
            nonlocal running
            async with admission.admit("a", "a", agent=False):
                running += 1
                if running == 2:
                    entered.set()
                await release.wait()

        try:
            tasks = [asyncio.create_task(request()) for _ in range(3)]
            await entered.wait()
            await asyncio.sleep(0.05)  # the third had every chance to enter
            assert running == 2
            assert admission.load("a").waiting == 1
            release.set()
            await asyncio.gather(*tasks)
            assert running == 3
        finally:
            await models.close()

    run(scenario)
