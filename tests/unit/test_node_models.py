"""ModelManager: loading, failure and retry, memory budget and LRU eviction, idle unload,
and models that change state inside their runtime.

Loading through a real adapter uses the `openai` runtime against the OpenAI API
stand-in (tests/fakes/openai_api.py). The manager's own decisions (what to evict,
when to unload, how to follow a crash) are exercised with `RecordingRuntime`, a
test double that records what the manager asks of a runtime and nothing more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from edgefleet_contract.desired import ModelWant, NodeLimits
from node_agent import models as models_module
from node_agent.catalog import Catalog, CatalogEntry
from node_agent.errors import ModelLoadError, NotFound, RuntimeUnavailable
from node_agent.metrics import NodeMetrics
from node_agent.models import ModelManager
from node_agent.runtimes.base import (
    LoadedModel,
    LoadProgress,
    ModelEndpoint,
    ModelSource,
    ProgressCallback,
    Runtime,
    RuntimeHealth,
    RuntimeName,
    StateListener,
)
from node_agent.runtimes.registry import create_runtime
from tests.fakes.openai_api import FakeOpenAIServer

pytestmark = pytest.mark.timeout(20)

MB = 2**20


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 15))


async def until(condition: Callable[[], bool], what: str, within_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within_s:.0f}s: {what}")
        await asyncio.sleep(0.01)


class RecordingRuntime(Runtime):
    """Test double: records the manager's calls; a load succeeds at once unless told
    otherwise, and a loaded model takes the memory its source says."""

    name: RuntimeName = "ollama"

    def __init__(self, listener: StateListener | None = None) -> None:
        super().__init__(listener)
        self.calls: list[tuple[str, str]] = []
        self.served: dict[str, ModelSource] = {}
        self.gate: asyncio.Event | None = None
        self.failures_left: dict[str, int] = {}
        self.most_served = 0
        """The most models loaded (or being loaded) at once."""
        self._loading = 0

    def listen(self, listener: StateListener) -> None:
        """Report to `listener` (the manager's, which the runtime factory is given)."""
        self._listener = listener

    async def start(self) -> None:
        self.calls.append(("start", ""))

    async def stop(self) -> None:
        self.calls.append(("stop", ""))
        self.served.clear()

    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        self.calls.append(("load", source.alias))
        progress(LoadProgress("pulling", 0.5))
        self._loading += 1
        self.most_served = max(self.most_served, len(self.served) + self._loading)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.failures_left.get(source.alias, 0) > 0:
                self.failures_left[source.alias] -= 1
                raise ModelLoadError(f"`{source.alias}` does not fit on the disk")
        finally:
            self._loading -= 1
        self.served[source.alias] = source
        return LoadedModel(self.endpoint(source.alias), memory_bytes=source.memory_bytes)

    async def unload(self, alias: str) -> None:
        self.calls.append(("unload", alias))
        self.served.pop(alias, None)

    async def loaded(self) -> list[str]:
        return sorted(self.served)

    async def health(self) -> RuntimeHealth:
        return RuntimeHealth(True, "recording")

    def endpoint(self, alias: str) -> ModelEndpoint:
        if alias not in self.served:
            raise NotFound(alias)
        return ModelEndpoint(f"http://127.0.0.1:9/{alias}/v1", alias)

    async def memory_used(self) -> int:
        return sum(s.memory_bytes for s in self.served.values())

    def unloads(self) -> list[str]:
        return [alias for call, alias in self.calls if call == "unload"]

    def loads(self) -> list[str]:
        return [alias for call, alias in self.calls if call == "load"]


class Harness:
    """A manager over one RecordingRuntime, with every state it reported, per model."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.runtime = RecordingRuntime()
        self.metrics = NodeMetrics()
        self.history: dict[str, list[str]] = {}

        def factory(name: str, listener: StateListener) -> Runtime:
            self.runtime.listen(listener)
            return self.runtime

        self.manager = ModelManager(catalog or Catalog(), factory, self.metrics, self._record)

    def _record(self) -> None:
        for slot in self.manager.slots():
            states = self.history.setdefault(slot.want.alias, [])
            if not states or states[-1] != slot.state:
                states.append(slot.state)

    def state(self, alias: str) -> str | None:
        return self.manager.state(alias)

    def reason(self, alias: str) -> str:
        slot = self.manager.slot(alias)
        assert slot is not None
        return slot.reason

    async def want(self, wants: Sequence[ModelWant], limits: NodeLimits | None = None) -> None:
        await self.manager.reconcile(wants, limits or NodeLimits())

    async def ready(self, *aliases: str) -> None:
        await until(lambda: all(self.state(a) == "ready" for a in aliases), f"{aliases} ready")


def model(alias: str, memory: int = 0) -> ModelWant:
    return ModelWant(alias=alias, runtime="ollama", source=f"{alias}:latest", memory_bytes=memory)


# -- through the real openai adapter -------------------------------------------------------


def test_a_model_on_an_openai_endpoint_loads_and_serves() -> None:
    async def scenario() -> None:
        with FakeOpenAIServer(["fake-model"]) as server:
            url = f"{server.url}/v1"
            catalog = Catalog({"cloud": CatalogEntry("openai", "fake-model", options={"url": url})})
            states: list[str] = []
            manager = ModelManager(
                catalog,
                lambda name, listener: create_runtime(name, listener),
                NodeMetrics(),
                lambda: states.append(str(manager.state("cloud"))),
            )
            try:
                await manager.reconcile([ModelWant(alias="cloud")], NodeLimits())
                await until(lambda: manager.state("cloud") == "ready", "ready")
                assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == [
                    "pending",
                    "loading",
                    "ready",
                ]
                async with manager.use("cloud", 1.0) as endpoint:
                    assert (endpoint.base_url, endpoint.model) == (url, "fake-model")
                    assert manager.slot("cloud").in_use == 1  # type: ignore[union-attr]
                assert manager.slot("cloud").in_use == 0  # type: ignore[union-attr]
                assert server.paths("GET") == ["/v1/models"], "load checked the endpoint once"
            finally:
                await manager.close()

    run(scenario)


def test_a_failed_load_says_why_and_is_retried_until_it_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models_module, "RETRY_DELAYS", (0.05, 0.05))
    monkeypatch.delenv("EF_TEST_MODELS_KEY", raising=False)

    async def scenario() -> None:
        with FakeOpenAIServer(["fake-model"], api_key="sekrit") as server:
            options = {"url": f"{server.url}/v1", "api_key_env": "EF_TEST_MODELS_KEY"}
            catalog = Catalog({"cloud": CatalogEntry("openai", "fake-model", options=options)})
            manager = ModelManager(
                catalog,
                lambda n, listener: create_runtime(n, listener),
                NodeMetrics(),
                lambda: None,
            )
            try:
                await manager.reconcile([ModelWant(alias="cloud")], NodeLimits())
                await until(lambda: manager.state("cloud") == "failed", "failed")
                slot = manager.slot("cloud")
                assert slot is not None
                assert "EF_TEST_MODELS_KEY" in slot.reason
                with pytest.raises(RuntimeUnavailable, match="EF_TEST_MODELS_KEY"):
                    async with manager.use("cloud", 1.0):
                        pass
                monkeypatch.setenv("EF_TEST_MODELS_KEY", "sekrit")  # the operator fixes it
                await until(lambda: manager.state("cloud") == "ready", "ready after a retry")
                assert slot.failures == 0
                assert slot.reason == ""
            finally:
                await manager.close()

    run(scenario)


# -- the manager's own logic ---------------------------------------------------------------


def test_an_alias_nobody_serves_fails_without_retrying() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.want([ModelWant(alias="mystery")])
        await until(lambda: harness.state("mystery") == "failed", "failed")
        slot = harness.manager.slot("mystery")
        assert slot is not None
        assert slot.task is None, "no retry can help"
        assert "no runtime on this node can serve model `mystery`" in slot.reason
        assert harness.runtime.loads() == []
        await harness.manager.close()

    run(scenario)


def test_a_request_waits_for_a_loading_model_up_to_its_deadline() -> None:
    async def scenario() -> None:
        harness = Harness()
        harness.runtime.gate = asyncio.Event()
        await harness.want([model("a")])
        await until(lambda: harness.state("a") == "loading", "loading")
        with pytest.raises(RuntimeUnavailable, match="not ready within"):
            async with harness.manager.use("a", 0.05):
                pass
        waiting = asyncio.ensure_future(_use(harness.manager, "a", 5.0))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        harness.runtime.gate.set()
        assert await waiting == "http://127.0.0.1:9/a/v1"
        with pytest.raises(NotFound):
            async with harness.manager.use("absent", 1.0):
                pass
        await harness.manager.close()

    run(scenario)


def test_a_request_waiting_for_a_model_is_refused_as_soon_as_its_load_fails() -> None:
    async def scenario() -> None:
        harness = Harness()
        harness.runtime.gate = asyncio.Event()
        harness.runtime.failures_left["a"] = 1
        await harness.want([model("a")])
        await until(lambda: harness.state("a") == "loading", "loading")
        waiting = asyncio.ensure_future(_use(harness.manager, "a", 60.0))
        await asyncio.sleep(0.05)
        harness.runtime.gate.set()
        with pytest.raises(RuntimeUnavailable, match="does not fit on the disk"):
            await asyncio.wait_for(waiting, 2.0)  # not after its 60 s
        await harness.manager.close()

    run(scenario)


def test_a_model_unloaded_while_a_request_waits_loads_again_for_it() -> None:
    async def scenario() -> None:
        harness = Harness()
        harness.runtime.gate = asyncio.Event()
        await harness.want([model("a")])
        await until(lambda: harness.state("a") == "loading", "loading")
        waiting = asyncio.ensure_future(_use(harness.manager, "a", 60.0))
        await asyncio.sleep(0.05)
        await harness.manager.unload_now("a")
        harness.runtime.gate.set()
        assert await asyncio.wait_for(waiting, 2.0) == "http://127.0.0.1:9/a/v1"
        assert harness.runtime.loads() == ["a", "a"]
        await harness.manager.close()

    run(scenario)


def test_a_model_removed_while_a_request_waits_is_not_found() -> None:
    async def scenario() -> None:
        harness = Harness()
        harness.runtime.gate = asyncio.Event()
        await harness.want([model("a")])
        await until(lambda: harness.state("a") == "loading", "loading")
        waiting = asyncio.ensure_future(_use(harness.manager, "a", 60.0))
        await asyncio.sleep(0.05)
        await harness.want([])
        with pytest.raises(NotFound, match="removed"):
            await asyncio.wait_for(waiting, 2.0)
        await harness.manager.close()

    run(scenario)


async def _use(manager: ModelManager, alias: str, timeout: float) -> str:
    async with manager.use(alias, timeout) as endpoint:
        return endpoint.base_url


def test_the_least_recently_used_model_is_evicted_and_only_as_many_as_needed() -> None:
    async def scenario() -> None:
        harness = Harness()
        budget = NodeLimits(max_memory_bytes=250 * MB)
        await harness.want([model("a", 100 * MB), model("b", 100 * MB)], budget)
        await harness.ready("a", "b")
        async with harness.manager.use("a", 1.0):  # `a` is the more recent
            pass

        await harness.want(
            [model("a", 100 * MB), model("b", 100 * MB), model("c", 100 * MB)], budget
        )
        await harness.ready("c")
        assert harness.runtime.unloads() == ["b"]
        assert harness.state("a") == "ready"
        assert harness.state("b") == "pending", "still wanted; loads on the next request"
        assert harness.reason("b") == "evicted to make room for c"

        # The evicted model comes back on demand, evicting the now least recent (`a`).
        assert await _use(harness.manager, "b", 5.0) == "http://127.0.0.1:9/b/v1"
        assert harness.runtime.unloads() == ["b", "a"]
        await harness.manager.close()

    run(scenario)


def test_the_budget_counts_memory_the_catalog_knows() -> None:
    # The manifest says nothing about memory; the node's catalog does (as for SmolLM2).
    catalog = Catalog(
        {alias: CatalogEntry("ollama", f"{alias}:q4", memory_bytes=100 * MB) for alias in "abc"}
    )

    async def scenario() -> None:
        harness = Harness(catalog)
        budget = NodeLimits(model_cache_bytes=250 * MB)
        await harness.want([ModelWant(alias="a"), ModelWant(alias="b")], budget)
        await harness.ready("a", "b")
        async with harness.manager.use("b", 1.0):
            pass
        await harness.want([ModelWant(alias=a) for a in "abc"], budget)
        await harness.ready("c")
        assert harness.runtime.unloads() == ["a"]
        slots = {s.want.alias: s for s in harness.manager.slots()}
        assert sum(s.memory_bytes for s in slots.values() if s.state == "ready") == 200 * MB
        await harness.manager.close()

    run(scenario)


def test_models_loading_at_the_same_time_stay_within_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models_module, "RETRY_DELAYS", (0.05,))

    async def scenario() -> None:
        harness = Harness()
        harness.runtime.gate = asyncio.Event()  # all three are loading at once
        budget = NodeLimits(max_memory_bytes=250 * MB)
        await harness.want([model(a, 100 * MB) for a in "abc"], budget)
        await until(lambda: harness.state("c") == "failed", "the third does not fit")
        assert "budget" in harness.reason("c")
        harness.runtime.gate.set()
        # Retried once the others are ready: it takes the place of the least recent.
        await harness.ready("c")
        assert harness.runtime.most_served == 2
        assert sorted(str(harness.state(a)) for a in "abc") == ["pending", "ready", "ready"]
        await harness.manager.close()

    run(scenario)


def test_a_model_in_use_is_never_evicted_and_a_model_that_cannot_fit_fails() -> None:
    async def scenario() -> None:
        harness = Harness()
        budget = NodeLimits(max_memory_bytes=150 * MB)
        await harness.want([model("a", 100 * MB)], budget)
        await harness.ready("a")
        async with harness.manager.use("a", 1.0):
            await harness.want([model("a", 100 * MB), model("b", 100 * MB)], budget)
            await until(lambda: harness.state("b") == "failed", "b failed")
            assert harness.state("a") == "ready"
            assert "needs 104857600 bytes but only 52428800 of the 157286400-byte budget" in (
                harness.reason("b")
            )
        assert harness.runtime.unloads() == []
        await harness.manager.close()

    run(scenario)


def test_an_idle_model_is_unloaded_and_loads_again_on_the_next_request() -> None:
    async def scenario() -> None:
        harness = Harness()
        limits = NodeLimits(auto_unload_idle_models=True, idle_timeout_s=0.1)
        await harness.want([model("a")], limits)
        await harness.ready("a")
        await until(lambda: harness.state("a") == "pending", "unloaded when idle", 3.0)
        assert harness.runtime.unloads() == ["a"]
        assert harness.reason("a").startswith("unloaded after")
        assert await _use(harness.manager, "a", 5.0) == "http://127.0.0.1:9/a/v1"
        assert harness.runtime.loads() == ["a", "a"]
        await harness.manager.close()

    run(scenario)


def test_idle_models_stay_loaded_unless_asked() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.want([model("a")], NodeLimits(idle_timeout_s=0.1))
        await harness.ready("a")
        await asyncio.sleep(0.3)
        assert harness.state("a") == "ready"
        assert harness.runtime.unloads() == []
        await harness.manager.close()

    run(scenario)


def test_a_crash_inside_the_runtime_is_followed() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.want([model("a")])
        await harness.ready("a")
        runtime = harness.runtime
        runtime.notify("a", "loading", "server died (signal SIGKILL); restarting it")
        assert harness.state("a") == "loading"
        assert "SIGKILL" in harness.reason("a")
        with pytest.raises(RuntimeUnavailable, match="not ready"):
            async with harness.manager.use("a", 0.05):
                pass
        runtime.notify("a", "ready", "")
        assert (harness.state("a"), harness.reason("a")) == ("ready", "")
        runtime.notify("a", "failed", "keeps crashing")
        assert harness.state("a") == "failed"
        runtime.notify("unknown", "failed", "not ours")  # ignored
        assert harness.history["a"] == ["pending", "loading", "ready", "loading", "ready", "failed"]
        assert harness.metrics.registry.get_sample_value("edgefleet_models_ready") == 0
        await harness.manager.close()

    run(scenario)


def test_a_removed_model_that_keeps_crashing_is_unloaded_from_its_runtime() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.want([model("a")])
        await harness.ready("a")
        harness.runtime.notify("a", "failed", "keeps crashing; still retrying")
        await harness.want([])
        assert harness.runtime.unloads() == ["a"], "or the runtime restarts it forever"
        assert harness.manager.slots() == []
        await harness.manager.close()

    run(scenario)


def test_a_changed_source_reloads_and_close_stops_the_runtime() -> None:
    async def scenario() -> None:
        harness = Harness()
        await harness.want([model("a")])
        await harness.ready("a")
        await harness.want([ModelWant(alias="a", runtime="ollama", source="a:v2")])
        await harness.ready("a")
        assert harness.runtime.calls[-2:] == [("unload", "a"), ("load", "a")]
        assert harness.runtime.served["a"].source == "a:v2"
        await harness.manager.close()
        assert harness.runtime.calls[-2:] == [("unload", "a"), ("stop", "")]

    run(scenario)
