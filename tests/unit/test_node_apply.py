"""Node.apply: generations, what is saved, what is enacted, and restoring after a restart.

The node's models run on its `openai` runtime against the OpenAI API stand-in
(tests/fakes/openai_api.py); no real model is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_contract.desired import AgentWant, ItemChange, ModelWant, NodeDesired
from node_agent.agents.run_events import TextDelta
from node_agent.agents.run_options import RunOptions
from node_agent.config import NodeConfig
from node_agent.daemon import Node
from node_agent.errors import StaleGeneration
from node_agent.runtimes.base import Runtime, StateListener
from node_agent.runtimes.openai_url import OpenAIURLRuntime
from node_agent.runtimes.registry import create_runtime
from node_agent.state_file import StateFile
from node_agent.tools.registry import build_tools
from tests.fakes.openai_api import FakeOpenAIServer, reply_text

pytestmark = pytest.mark.timeout(30)

MODEL = ModelWant(alias="fake", runtime="openai", source="fake-model")
HELPER = AgentWant(name="helper", model="fake", tools=("time",), instructions="Be brief.")
NOTES = AgentWant(name="notes", model="fake")
ANSWER = reply_text("openai", "fake-model")


def state(generation: int, *agents: AgentWant, controller: str = "ctrl-1") -> NodeDesired:
    return NodeDesired(
        generation=generation, controller_id=controller, models=(MODEL,), agents=agents
    )


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 20))


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(["fake-model"]) as running:
        yield running


NodeMaker = Callable[[], contextlib.AbstractAsyncContextManager[Node]]


@pytest.fixture
def nodes(tmp_path: Path, server: FakeOpenAIServer) -> NodeMaker:
    """Nodes sharing one data folder (one box, restarted), their models on the stand-in."""

    def factory(name: str, listener: StateListener) -> Runtime:
        return create_runtime(name, listener, {"url": f"{server.url}/v1"})

    @contextlib.asynccontextmanager
    async def make() -> AsyncIterator[Node]:
        config = NodeConfig(node_id="n1", data_dir=tmp_path, metrics_port=None, advertise=False)
        node = Node(config, runtime_factory=factory)
        try:
            yield node
        finally:
            await node.close()

    return make


async def ready(node: Node, within_s: float = 5.0) -> node_pb2.NodeStatus:
    """The node's status once every model and agent of it is ready."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        status = await node.status(1, heartbeat=False)
        models = all(m.state == common_pb2.MODEL_STATE_READY for m in status.models)
        agents = all(a.state == common_pb2.AGENT_STATE_READY for a in status.agents)
        if models and agents:
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not ready within {within_s}s: {status}")
        await asyncio.sleep(0.01)


async def ask(node: Node, agent: str) -> str:
    events = node.agents.invoke(agent, [{"role": "user", "content": "Hi"}], RunOptions(), 10.0)
    return "".join([e.text async for e in events if isinstance(e, TextDelta)])


def test_a_first_generation_is_saved_then_enacted(nodes: NodeMaker, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with nodes() as node:
            changes = await node.apply(state(1, HELPER))
            assert changes == [
                ItemChange("model", "fake", "created"),
                ItemChange("agent", "helper", "created"),
            ]
            assert StateFile(tmp_path).load() == state(1, HELPER)
            status = await ready(node)
            assert status.generation == 1
            assert [a.name for a in status.agents] == ["helper"]
            assert await ask(node, "helper") == ANSWER

    run(scenario)


def test_the_same_generation_again_changes_nothing(
    nodes: NodeMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with nodes() as node:
            await node.apply(state(1, HELPER))
            await ready(node)
            saves: list[NodeDesired] = []
            monkeypatch.setattr(node.state_file, "save", saves.append)
            # Another controller re-sending what it took over is the same instruction.
            again = await node.apply(state(1, HELPER, controller="ctrl-2"))
            assert [c.action for c in again] == ["unchanged", "unchanged"]
            assert saves == []
            assert node.desired.controller_id == "ctrl-1"

    run(scenario)


def test_an_older_generation_or_the_same_one_changed_is_refused(
    nodes: NodeMaker, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with nodes() as node:
            await node.apply(state(5, HELPER))
            with pytest.raises(StaleGeneration, match="generation 4 is older than the 5"):
                await node.apply(state(4, HELPER, NOTES))
            with pytest.raises(StaleGeneration, match="already applied with other content"):
                await node.apply(state(5, HELPER, NOTES))
            assert node.desired == state(5, HELPER)
            assert StateFile(tmp_path).load() == state(5, HELPER)
            assert node.agents.names() == ["helper"]

    run(scenario)


def test_a_newer_generation_adds_updates_and_removes(nodes: NodeMaker) -> None:
    async def scenario() -> None:
        async with nodes() as node:
            await node.apply(state(1, HELPER, NOTES))
            await ready(node)
            shorter = HELPER.model_copy(update={"instructions": "Be very brief."})
            writer = AgentWant(name="writer", model="fake")
            changes = await node.apply(state(2, shorter, writer))
            assert changes == [
                ItemChange("model", "fake", "unchanged"),
                ItemChange("agent", "helper", "updated"),
                ItemChange("agent", "writer", "created"),
                ItemChange("agent", "notes", "removed"),
            ]
            assert node.agents.want("helper").instructions == "Be very brief."
            status = await ready(node)
            assert status.generation == 2
            assert [a.name for a in status.agents if a.name != "notes"] == ["helper", "writer"]
            assert await ask(node, "writer") == ANSWER

    run(scenario)


def test_generations_applied_at_once_are_taken_one_at_a_time(nodes: NodeMaker) -> None:
    async def scenario() -> None:
        async with nodes() as node:
            results = await asyncio.gather(
                node.apply(state(3, HELPER)),
                node.apply(state(2, NOTES)),
                return_exceptions=True,
            )
            assert isinstance(results[1], StaleGeneration)
            assert node.desired == state(3, HELPER)

    run(scenario)


def test_a_restarted_node_restores_its_state_without_a_controller(nodes: NodeMaker) -> None:
    async def scenario() -> None:
        async with nodes() as first:
            await first.apply(state(7, HELPER))
            await ready(first)
        async with nodes() as second:
            assert await second.restore()
            assert second.desired == state(7, HELPER)
            status = await ready(second)
            assert status.generation == 7
            assert await ask(second, "helper") == ANSWER
            with pytest.raises(StaleGeneration):
                await second.apply(state(6, HELPER))

    run(scenario)


def test_a_node_without_a_saved_state_starts_empty(nodes: NodeMaker) -> None:
    async def scenario() -> None:
        async with nodes() as node:
            assert not await node.restore()
            assert node.desired == NodeDesired()

    run(scenario)


def test_a_request_that_arrives_while_its_agent_starts_waits_for_it(
    nodes: NodeMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    building = threading.Event()
    release = threading.Event()

    def slow_build(*args: Any) -> Any:
        building.set()
        release.wait(10)  # tools that open a large database, say
        return build_tools(*args)

    monkeypatch.setattr("node_agent.agents.host.build_tools", slow_build)

    async def scenario() -> None:
        async with nodes() as node:
            try:
                applying = asyncio.ensure_future(node.apply(state(1, HELPER)))
                await asyncio.to_thread(building.wait, 10)
                await asyncio.sleep(0.2)  # the model is ready by now; the agent still starts
                asking = asyncio.ensure_future(ask(node, "helper"))
                await asyncio.sleep(0.1)
                assert not asking.done(), "it waits for the agent's tools"
            finally:
                release.set()  # never leave the build thread blocked
            await applying
            assert await asking == ANSWER

    run(scenario)


# -- an agent moved to another model ---------------------------------------------------------

SMALL_A = ModelWant(alias="small-a", runtime="openai", source="fake-model")
SMALL_B = ModelWant(alias="small-b", runtime="openai", source="fake-model")


def on(model: ModelWant, generation: int, *agents: str) -> NodeDesired:
    """`model` alone, with agents named `agents` on it."""
    return NodeDesired(
        generation=generation,
        models=(model,),
        agents=tuple(AgentWant(name=name, model=model.alias) for name in agents),
    )


class Unloads:
    """The aliases the node's openai runtime unloads; held back while `gate` is not set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.aliases: list[str] = []
        self.gate: asyncio.Event | None = None
        self.waiting: asyncio.Event | None = None
        """Set when an unload is being held at the gate."""
        original = OpenAIURLRuntime.unload

        async def unload(runtime: OpenAIURLRuntime, alias: str) -> None:
            if self.gate is not None and self.waiting is not None:
                # As a llama.cpp server takes a while to stop.
                self.waiting.set()
                await self.gate.wait()
            self.aliases.append(alias)
            await original(runtime, alias)

        monkeypatch.setattr(OpenAIURLRuntime, "unload", unload)


def test_an_agent_moved_to_a_new_model_never_finds_it_missing(
    nodes: NodeMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    unloads = Unloads(monkeypatch)

    async def scenario() -> None:
        async with nodes() as node:
            await node.apply(on(SMALL_A, 1, "helper"))
            await ready(node)
            unloads.gate, unloads.waiting = asyncio.Event(), asyncio.Event()
            # The agent moves to a new model, and a new agent arrives with that model.
            applying = asyncio.ensure_future(node.apply(on(SMALL_B, 2, "helper", "writer")))
            try:
                await asyncio.wait_for(unloads.waiting.wait(), 5)  # small-a is on its way out
                status = await node.status(1, heartbeat=False)
                states = {a.name: (a.state, a.reason) for a in status.agents}
                assert sorted(states) == ["helper", "writer"]
                for name, (agent_state, reason) in states.items():
                    assert agent_state != common_pb2.AGENT_STATE_FAILED, f"{name}: {reason}"
            finally:
                unloads.gate.set()
            await applying
            status = await ready(node)
            assert [(a.name, a.model) for a in status.agents] == [
                ("helper", "small-b"),
                ("writer", "small-b"),
            ]
            assert [m.alias for m in status.models] == ["small-b"]
            assert unloads.aliases == ["small-a"]

    run(scenario)


def test_a_model_that_goes_away_is_retired_once_its_agents_requests_are_done(
    nodes: NodeMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    unloads = Unloads(monkeypatch)

    async def scenario() -> None:
        async with nodes() as node:
            await node.apply(on(SMALL_A, 1, "notes"))
            await ready(node)
            request = node.agents.invoke(
                "notes", [{"role": "user", "content": "Hi"}], RunOptions(), 10.0
            )
            first = await anext(request)  # the request is running on small-a
            await node.apply(on(SMALL_B, 2, "notes"))
            await asyncio.sleep(0.3)
            assert unloads.aliases == [], "small-a was retired under a running request"
            assert [m.alias for m in (await node.status(1, heartbeat=False)).models] == ["small-b"]
            rest = [e async for e in request]
            text = "".join(e.text for e in [first, *rest] if isinstance(e, TextDelta))
            assert text == reply_text("openai", "fake-model")
            deadline = asyncio.get_running_loop().time() + 5
            while unloads.aliases != ["small-a"]:
                assert asyncio.get_running_loop().time() < deadline, "small-a never retired"
                await asyncio.sleep(0.02)
            assert await ask(node, "notes") == ANSWER

    run(scenario)
