"""The router over stand-in nodes: which replica serves, when it retries, and why it gives up.

Nodes are scripted stubs behind a replica directory; the router, balancer, circuit
breakers and retry budget are the real ones, on a clock the tests drive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from edgefleet.v1 import node_pb2
from edgefleet_contract.routing import (
    AgentRoute,
    DeploymentRoutes,
    ModelRoute,
    RoutingIndex,
    Strategy,
    TargetKind,
)
from edgefleet_dataplane.circuit import COOL_DOWN_S, FAILURES_TO_OPEN
from edgefleet_dataplane.replicas import Candidate
from edgefleet_dataplane.retry_budget import RETRY_FLOOR
from edgefleet_dataplane.route_error import RouteError
from edgefleet_dataplane.router import Router

AGENT = "helper"
ALIAS = "tiny"

Script = Callable[[str], AsyncIterator[node_pb2.InvokeAgentChunk]]
"""What a stand-in node does with one request (given its node id)."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=f"refused with {code.name}"
    )


async def answer(node: str) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
    yield node_pb2.InvokeAgentChunk(delta="hello", node_id=node)
    yield node_pb2.InvokeAgentChunk(finish_reason="stop", node_id=node)


def refuse(code: grpc.StatusCode) -> Script:
    async def script(node: str) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
        raise rpc_error(code)
        yield  # pragma: no cover

    return script


async def break_after_answering(node: str) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
    yield node_pb2.InvokeAgentChunk(delta="partial", node_id=node)
    raise rpc_error(grpc.StatusCode.UNAVAILABLE)


@dataclass
class Stub:
    node: str
    script: Script
    calls: int = 0

    def InvokeAgent(self, request: Any, timeout: float) -> AsyncIterator[Any]:
        self.calls += 1
        return self.script(self.node)

    def ProxyModel(self, request: Any, timeout: float) -> AsyncIterator[Any]:
        self.calls += 1
        return self.script(self.node)


@dataclass
class Directory:
    """Every node with a script serves both targets; `reconnecting` ones have no stub."""

    stubs: dict[str, Stub]
    reconnecting: set[str] = field(default_factory=set)
    moved_away: list[tuple[str, str, str]] = field(default_factory=list)

    def ready(self, target: str, kind: TargetKind) -> list[Candidate]:
        return [Candidate(node, generation=1) for node in sorted(self.stubs)]

    def stub(self, node_id: str) -> Stub | None:
        return None if node_id in self.reconnecting else self.stubs.get(node_id)

    def moved(self, target: str, kind: TargetKind, node_id: str) -> None:
        self.moved_away.append((target, kind, node_id))


def index(strategy: Strategy | None = "peak-ewma", *, distributed: bool = True) -> RoutingIndex:
    deployment = DeploymentRoutes(
        name="shop",
        distributed=distributed,
        strategy=strategy,
        session_affinity=True,
        agents=(AgentRoute(name=AGENT),),
        models=(ModelRoute(alias=ALIAS),),
    )
    return RoutingIndex(deployments=(deployment,))


async def collect(router: Router, agent: str) -> list[str]:
    """The node ids on the chunks of one agent request."""
    invoke = node_pb2.InvokeAgentRequest(agent=agent)
    return [chunk.node_id async for chunk in router.invoke_agent(invoke, 30.0)]


class Setup:
    def __init__(self, scripts: dict[str, Script], routes: RoutingIndex | None = None) -> None:
        self.clock = Clock()
        self.directory = Directory({node: Stub(node, s) for node, s in scripts.items()})
        routes = routes or index()
        self.router = Router(self.directory, lambda: routes, self.clock)

    def calls(self) -> list[int]:
        return [stub.calls for _, stub in sorted(self.directory.stubs.items())]

    def ask(self, user: str = "") -> str:
        """The node that served one agent request."""

        async def request() -> str:
            invoke = node_pb2.InvokeAgentRequest(agent=AGENT)
            invoke.options.user = user
            chunks = [c async for c in self.router.invoke_agent(invoke, 30.0)]
            return chunks[0].node_id

        return asyncio.run(request())

    def refused(self) -> RouteError:
        """The error one agent request ends with."""
        with pytest.raises(RouteError) as caught:
            self.ask()
        return caught.value

    def open_circuit(self, node: str) -> None:
        for _ in range(FAILURES_TO_OPEN):
            self.router.balancer.failed(AGENT, node)


def test_a_half_open_replica_skipped_while_reconnecting_gets_its_trial_once_back() -> None:
    setup = Setup({"edge-a": answer, "edge-b": answer})
    setup.open_circuit("edge-a")
    setup.clock.now += COOL_DOWN_S
    setup.directory.reconnecting.add("edge-a")
    assert setup.ask() == "edge-b"
    setup.directory.reconnecting.clear()
    assert setup.ask() == "edge-a", "the trial was left free while edge-a had no channel"
    stats = setup.router.stats(AGENT, "edge-a")
    assert stats is not None
    assert stats.circuit == "closed"


def test_a_half_open_replica_takes_one_trial_at_a_time() -> None:
    setup = Setup({"edge-a": answer, "edge-b": answer})
    setup.open_circuit("edge-a")
    setup.clock.now += COOL_DOWN_S

    async def two_at_once() -> tuple[str, str]:
        asked, release = asyncio.Event(), asyncio.Event()

        async def slow(node: str) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
            asked.set()
            await release.wait()
            async for chunk in answer(node):
                yield chunk

        setup.directory.stubs["edge-a"].script = slow
        first = asyncio.create_task(collect(setup.router, AGENT))
        await asked.wait()  # the trial is on its way to edge-a
        second = await collect(setup.router, AGENT)
        release.set()
        return (await first)[0], second[0]

    assert asyncio.run(two_at_once()) == ("edge-a", "edge-b")


def test_a_refusal_before_any_answer_is_retried_on_another_replica() -> None:
    setup = Setup(
        {"edge-a": refuse(grpc.StatusCode.UNAVAILABLE), "edge-b": answer},
        index("least-outstanding"),
    )
    assert setup.ask() == "edge-b"
    assert setup.calls() == [1, 1]
    stats = setup.router.stats(AGENT, "edge-a")
    assert stats is not None
    assert (stats.failures, stats.in_flight) == (1, 0)


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION])
def test_a_replica_that_moved_away_is_retried_elsewhere_and_told_to_the_directory(
    code: grpc.StatusCode,
) -> None:
    setup = Setup({"edge-a": refuse(code), "edge-b": answer}, index(None))
    assert setup.ask() == "edge-b"
    assert setup.directory.moved_away == [(AGENT, "agent", "edge-a")]


def test_a_replica_that_fails_to_connect_is_not_said_to_have_moved() -> None:
    setup = Setup({"edge-a": refuse(grpc.StatusCode.UNAVAILABLE), "edge-b": answer}, index(None))
    assert setup.ask() == "edge-b"
    assert setup.directory.moved_away == []


def test_an_answer_that_broke_off_is_not_retried_and_never_escalates() -> None:
    setup = Setup({"edge-a": break_after_answering, "edge-b": answer}, index(None))
    error = setup.refused()
    assert "outcome is unknown" in str(error)
    assert error.exhausted is None
    assert setup.calls() == [1, 0]


async def break_after_a_tool(node: str) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
    yield node_pb2.InvokeAgentChunk(delta="let me look", node_id=node)
    chunk = node_pb2.InvokeAgentChunk(node_id=node)
    chunk.tool.tool = "email"
    chunk.tool.side_effects = True
    yield chunk
    raise rpc_error(grpc.StatusCode.UNAVAILABLE)


def whole_answer(setup: Setup) -> list[node_pb2.InvokeAgentChunk]:
    """The chunks of one agent request whose caller takes the answer only whole."""

    async def request() -> list[node_pb2.InvokeAgentChunk]:
        invoke = node_pb2.InvokeAgentRequest(agent=AGENT)
        return [c async for c in setup.router.invoke_agent(invoke, 30.0, whole=True)]

    return asyncio.run(request())


def test_a_whole_answer_that_broke_off_before_its_end_is_retried_elsewhere() -> None:
    setup = Setup({"edge-a": break_after_answering, "edge-b": answer}, index(None))
    chunks = whole_answer(setup)
    # Nothing of edge-a's partial answer reaches the caller: only edge-b's whole one.
    assert [(c.node_id, c.delta) for c in chunks] == [("edge-b", "hello"), ("edge-b", "")]
    assert setup.calls() == [1, 1]


def test_a_whole_answer_is_not_retried_once_a_tool_started() -> None:
    setup = Setup({"edge-a": break_after_a_tool, "edge-b": answer}, index(None))
    with pytest.raises(RouteError, match="outcome is unknown"):
        whole_answer(setup)
    assert setup.calls() == [1, 0]


def test_a_request_the_node_finds_invalid_is_not_retried() -> None:
    setup = Setup(
        {"edge-a": refuse(grpc.StatusCode.INVALID_ARGUMENT), "edge-b": answer}, index(None)
    )
    error = setup.refused()
    assert (error.code, error.exhausted) == (grpc.StatusCode.INVALID_ARGUMENT, None)
    assert setup.calls() == [1, 0]


@pytest.mark.parametrize(
    ("codes", "status", "exhausted"),
    [
        (
            [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "queues-full",
        ),
        (
            [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND],
            grpc.StatusCode.UNAVAILABLE,
            "replicas-failed",
        ),
    ],
)
def test_every_replica_refusing_says_why_the_edge_could_not_serve(
    codes: list[grpc.StatusCode], status: grpc.StatusCode, exhausted: str
) -> None:
    setup = Setup({f"edge-{i}": refuse(code) for i, code in enumerate(codes)}, index(None))
    error = setup.refused()
    assert (error.code, error.exhausted) == (status, exhausted)
    assert "edge-0, edge-1" in str(error)


def test_no_ready_replica_and_every_circuit_open_are_told_apart() -> None:
    assert Setup({}).refused().exhausted == "no-ready-replica"
    setup = Setup({"edge-a": answer})
    setup.open_circuit("edge-a")
    assert setup.refused().exhausted == "circuits-open"
    assert setup.calls() == [0]
    setup = Setup({"edge-a": answer})
    setup.directory.reconnecting.add("edge-a")
    assert setup.refused().exhausted == "no-ready-replica"


def test_a_spent_retry_budget_stops_retrying() -> None:
    nodes = int(RETRY_FLOOR) + 2
    setup = Setup(
        {f"edge-{i}": refuse(grpc.StatusCode.UNAVAILABLE) for i in range(nodes)}, index(None)
    )
    error = setup.refused()
    assert error.exhausted == "retry-budget-spent"
    assert setup.calls() == [1] * (nodes - 1) + [0]


def test_a_spent_deadline_is_not_passed_on_as_exhausted() -> None:
    setup = Setup({})

    def slow_refusal(clock: Clock) -> Script:
        async def script(node: str) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
            clock.now += 60.0  # past the request's 30 s
            raise rpc_error(grpc.StatusCode.UNAVAILABLE)
            yield  # pragma: no cover

        return script

    setup.directory.stubs = {
        node: Stub(node, slow_refusal(setup.clock)) for node in ("edge-a", "edge-b")
    }
    error = setup.refused()
    assert error.exhausted is None
    assert setup.calls() == [1, 0], "no retry once the deadline passed"


def test_balancing_follows_the_deployment_of_the_target() -> None:
    single = Setup({"edge-a": answer, "edge-b": answer}, index("round-robin", distributed=False))
    assert [single.ask() for _ in range(4)] == ["edge-a"] * 4
    spread = Setup({"edge-a": answer, "edge-b": answer}, index("round-robin"))
    assert [spread.ask() for _ in range(4)] == ["edge-a", "edge-b"] * 2
    pinned = {spread.ask(user="user-7") for _ in range(4)}
    assert len(pinned) == 1, "session affinity keeps a user on one replica"


def test_a_caller_that_goes_away_ends_the_attempt() -> None:
    setup = Setup({"edge-a": answer})

    async def leave_early() -> None:
        chunks = setup.router.invoke_agent(node_pb2.InvokeAgentRequest(agent=AGENT), 30.0)
        await anext(chunks)
        stats = setup.router.stats(AGENT, "edge-a")
        assert stats is not None
        assert stats.in_flight == 1
        await chunks.aclose()

    asyncio.run(leave_early())
    stats = setup.router.stats(AGENT, "edge-a")
    assert stats is not None
    assert stats.in_flight == 0
