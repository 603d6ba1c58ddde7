"""NodeService handlers called directly: LoadModel ends when its model settles; names the
node does not have leave nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_contract.desired import ModelWant, NodeDesired
from node_agent import models as models_module
from node_agent.config import NodeConfig
from node_agent.daemon import Node
from node_agent.errors import ModelLoadError, NotFound
from node_agent.runtimes.base import (
    LoadedModel,
    ModelEndpoint,
    ModelSource,
    ProgressCallback,
    Runtime,
    RuntimeHealth,
    RuntimeName,
    StateListener,
)
from node_agent.server import NodeService

pytestmark = pytest.mark.timeout(30)

FAILED = common_pb2.MODEL_STATE_FAILED
BROKEN = ModelWant(alias="broken", runtime="ollama", source="broken:latest")


class BrokenRuntime(Runtime):
    """Every load fails with an error a retry may fix."""

    name: RuntimeName = "ollama"

    def __init__(self, listener: StateListener | None = None) -> None:
        super().__init__(listener)
        self.loads = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        self.loads += 1
        raise ModelLoadError(f"`{source.alias}` does not fit on the disk")

    async def unload(self, alias: str) -> None:
        pass

    async def loaded(self) -> list[str]:
        return []

    async def health(self) -> RuntimeHealth:
        return RuntimeHealth(True, "broken")

    def endpoint(self, alias: str) -> ModelEndpoint:
        raise NotFound(alias)

    async def memory_used(self) -> int:
        return 0


class Aborted(Exception):
    """What Context.abort raises, as grpc's does."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code


class Context:
    """What the handlers use of a grpc.aio.ServicerContext."""

    def time_remaining(self) -> float:
        return 10.0

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(code, message)


def run(scenario: Callable[[Node, BrokenRuntime], Coroutine[Any, Any, None]], data: Path) -> None:
    async def main() -> None:
        runtime = BrokenRuntime()

        def factory(name: str, listener: StateListener) -> Runtime:
            runtime._listener = listener
            return runtime

        config = NodeConfig(node_id="n1", data_dir=data, metrics_port=None, advertise=False)
        node = Node(config, runtime_factory=factory)
        try:
            await node.apply(NodeDesired(generation=1, models=(BROKEN,)))
            await scenario(node, runtime)
        finally:
            await node.close()

    asyncio.run(asyncio.wait_for(main(), 20))


async def failed(node: Node) -> None:
    while node.models.state(BROKEN.alias) != "failed":  # noqa: ASYNC110
        await asyncio.sleep(0.01)


async def progress(stream: AsyncIterator[node_pb2.ModelProgress]) -> list[node_pb2.ModelProgress]:
    return [p async for p in stream]


def test_load_model_ends_with_a_failure_that_waits_for_its_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models_module, "RETRY_DELAYS", (60.0,))

    async def scenario(node: Node, runtime: BrokenRuntime) -> None:
        await failed(node)
        request = node_pb2.LoadModelRequest(alias=BROKEN.alias)
        seen = await asyncio.wait_for(progress(NodeService(node).LoadModel(request, Context())), 2)
        assert seen[-1].state == FAILED, seen  # now, not after the retry a minute later
        assert "does not fit on the disk" in seen[-1].message

    run(scenario, tmp_path)


def test_load_model_reports_the_failure_of_the_load_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models_module, "RETRY_DELAYS", (60.0,))

    async def scenario(node: Node, runtime: BrokenRuntime) -> None:
        await failed(node)
        service = NodeService(node)
        unload = node_pb2.UnloadModelRequest(alias=BROKEN.alias)
        await asyncio.wait_for(progress(service.UnloadModel(unload, Context())), 2)
        assert node.models.state(BROKEN.alias) == "pending"
        request = node_pb2.LoadModelRequest(alias=BROKEN.alias)
        seen = await asyncio.wait_for(progress(service.LoadModel(request, Context())), 2)
        assert seen[-1].state == FAILED, seen
        assert runtime.loads == 2, "LoadModel loads a model that is pending at once"

    run(scenario, tmp_path)


def test_a_proxy_request_for_a_model_the_node_lacks_leaves_no_trace(tmp_path: Path) -> None:
    async def scenario(node: Node, runtime: BrokenRuntime) -> None:
        service = NodeService(node)
        for n in range(3):
            request = node_pb2.ProxyModelRequest(model=f"nobody-{n}", body=b"{}")
            with pytest.raises(Aborted, match="not on this node") as refused:
                async for _ in service.ProxyModel(request, Context()):
                    pass
            assert refused.value.code == grpc.StatusCode.NOT_FOUND
        assert set(node.admission.loads) <= {BROKEN.alias}

    run(scenario, tmp_path)
