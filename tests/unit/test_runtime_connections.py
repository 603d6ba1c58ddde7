"""A runtime that may close a kept-alive connection just as the next request is sent on it
(llama-server does, after a streamed answer) gets every request on a connection of its
own, from the model path and from agents: against an OpenAI API stand-in that records
the headers it was sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from edgefleet_contract.desired import ModelWant, NodeLimits
from node_agent.admission import Admission
from node_agent.agents.run_events import RunFinished
from node_agent.agents.runner import AgentRunner
from node_agent.catalog import Catalog, CatalogEntry
from node_agent.metrics import NodeMetrics
from node_agent.model_proxy import ModelProxy
from node_agent.models import ModelManager
from node_agent.runtimes.base import ModelEndpoint
from tests.fakes.openai_api import FakeOpenAIServer
from tests.unit.test_model_capacity import SlotRuntime

pytestmark = pytest.mark.timeout(20)

MODEL = "small-model"


class ClosingRuntime(SlotRuntime):
    """Serves every model at one OpenAI URL, asking for a connection per request."""

    url = ""

    def endpoint(self, alias: str) -> ModelEndpoint:
        return ModelEndpoint(f"{self.url}/v1", MODEL, reuse_connections=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer([MODEL]) as fake:
        yield fake


def test_agents_ask_for_a_connection_per_request(server: FakeOpenAIServer) -> None:
    async def scenario() -> list[object]:
        endpoint = ModelEndpoint(f"{server.url}/v1", MODEL, reuse_connections=False)
        runner = AgentRunner("a", "Be brief.", endpoint, [])
        try:
            return [e async for e in runner.run([{"role": "user", "content": "hi"}])]
        finally:
            await runner.close()

    events = asyncio.run(asyncio.wait_for(scenario(), 15))
    assert isinstance(events[-1], RunFinished)
    (request,) = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert request.headers["connection"] == "close"


def test_the_model_path_asks_for_a_connection_per_request(server: FakeOpenAIServer) -> None:
    async def scenario() -> bytes:
        runtime = ClosingRuntime()
        runtime.url = server.url
        catalog = Catalog({"m": CatalogEntry(runtime="vllm", source="m")})
        metrics = NodeMetrics()
        models = ModelManager(catalog, lambda name, listener: runtime, metrics, lambda: None)
        await models.reconcile([ModelWant(alias="m")], NodeLimits())
        proxy = ModelProxy(models, Admission(models.parallel_requests), metrics)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        try:
            parts = [part.data async for part in proxy.forward("m", body.encode(), 10)]
        finally:
            await proxy.close()
            await models.close()
        return b"".join(parts)

    answer = json.loads(asyncio.run(asyncio.wait_for(scenario(), 15)))
    assert answer["model"] == MODEL
    (request,) = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert request.headers["connection"] == "close"


def test_by_default_connections_are_kept_alive(server: FakeOpenAIServer) -> None:
    async def scenario() -> None:
        endpoint = ModelEndpoint(f"{server.url}/v1", MODEL)
        runner = AgentRunner("a", "Be brief.", endpoint, [])
        try:
            [e async for e in runner.run([{"role": "user", "content": "hi"}])]
        finally:
            await runner.close()

    asyncio.run(asyncio.wait_for(scenario(), 15))
    (request,) = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert request.headers.get("connection", "keep-alive") == "keep-alive"
