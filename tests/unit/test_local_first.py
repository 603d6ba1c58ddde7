"""Local first: the gateway's own node ranks first whatever the strategy, and its in-process
errors (`StatusError`) follow the same retry rules as a peer's gRPC errors.

Nodes are scripted stubs; the balancer, router, circuits and retry budget are real,
on a clock the tests drive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from edgefleet.v1 import node_pb2
from edgefleet_common.grpc_errors import StatusError
from edgefleet_contract.routing import (
    AgentRoute,
    DeploymentRoutes,
    RoutingIndex,
    Strategy,
    TargetKind,
)
from edgefleet_dataplane.balancer import Balancer, Replica
from edgefleet_dataplane.circuit import COOL_DOWN_S, FAILURES_TO_OPEN
from edgefleet_dataplane.replicas import Candidate
from edgefleet_dataplane.route_error import RouteError
from edgefleet_dataplane.router import Router

AGENT = "helper"
STRATEGIES: list[Strategy | None] = ["round-robin", "least-outstanding", "peak-ewma", None]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- ranking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("user", ["", "alice", "bob", "carol"])
def test_the_local_replica_ranks_first_whatever_the_strategy(
    strategy: Strategy | None, user: str
) -> None:
    balancer = Balancer(Clock())
    # The local node is the busiest and the slowest, and sorts last by id: it still leads.
    balancer.first_byte(AGENT, "zz-local", 900.0)
    balancer.started(AGENT, "zz-local")
    replicas = [Replica("a-peer"), Replica("b-peer"), Replica("zz-local", 5, local=True)]
    for _ in range(4):  # round-robin turns do not move it either
        ranked = balancer.rank(AGENT, replicas, strategy, user)
        assert ranked[0].node_id == "zz-local"
        assert sorted(r.node_id for r in ranked) == ["a-peer", "b-peer", "zz-local"]
        balancer.advance(AGENT)


def test_a_local_replica_with_an_open_circuit_waits_its_trial_like_any_other() -> None:
    clock = Clock()
    balancer = Balancer(clock)
    replicas = [Replica("peer"), Replica("self", local=True)]
    for _ in range(FAILURES_TO_OPEN):
        balancer.failed(AGENT, "self")
    assert [r.node_id for r in balancer.rank(AGENT, replicas, "peak-ewma")] == ["peer"]
    clock.now += COOL_DOWN_S
    # Half-open: its trial leads, even before a peer's own trial.
    for _ in range(FAILURES_TO_OPEN):
        balancer.failed(AGENT, "peer")
    clock.now += COOL_DOWN_S
    assert [r.node_id for r in balancer.rank(AGENT, replicas, "peak-ewma")] == ["self"]


# -- the router with an in-process stub ---------------------------------------------------------


@dataclass
class Stub:
    node: str
    refuse: grpc.StatusCode | None = None
    as_grpc: bool = False
    """Refuse with a gRPC error (a peer) rather than a StatusError (in process)."""
    calls: int = 0
    generations: list[int] = field(default_factory=list)
    """The generation each request came with."""

    def InvokeAgent(self, request: Any, timeout: float) -> AsyncIterator[Any]:
        self.calls += 1
        self.generations.append(request.generation)
        return self._answer()

    def ProxyModel(self, request: Any, timeout: float) -> AsyncIterator[Any]:
        self.calls += 1
        self.generations.append(request.generation)
        return self._answer()

    async def _answer(self) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
        if self.refuse is not None:
            if self.as_grpc:
                metadata = grpc.aio.Metadata()
                raise grpc.aio.AioRpcError(self.refuse, metadata, metadata, details="refused")
            raise StatusError(self.refuse, f"{self.node} refused")
        yield node_pb2.InvokeAgentChunk(delta="hello", node_id=self.node)
        yield node_pb2.InvokeAgentChunk(finish_reason="stop", node_id=self.node)


@dataclass
class Directory:
    """`self` is the gateway's own node (local); the others are peers."""

    stubs: dict[str, Stub]
    ready_nodes: list[str] = field(default_factory=list)

    def ready(self, target: str, kind: TargetKind) -> list[Candidate]:
        # Each replica's generation differs, as assignments do.
        return [Candidate(n, 7 + i, local=n == "self") for i, n in enumerate(self.ready_nodes)]

    def stub(self, node_id: str) -> Stub | None:
        return self.stubs.get(node_id)

    def moved(self, target: str, kind: TargetKind, node_id: str) -> None:
        """Nothing to forget: the tests set the ready nodes themselves."""


def routes() -> RoutingIndex:
    deployment = DeploymentRoutes(
        name="shop", distributed=True, strategy="round-robin", agents=(AgentRoute(name=AGENT),)
    )
    return RoutingIndex(deployments=(deployment,))


def ask(router: Router) -> list[str]:
    async def request() -> list[str]:
        invoke = node_pb2.InvokeAgentRequest(agent=AGENT)
        return [c.node_id async for c in router.invoke_agent(invoke, 30.0)]

    return asyncio.run(request())


def setup(**stubs: Stub) -> tuple[Router, Directory]:
    directory = Directory(dict(stubs), sorted(stubs))
    index = routes()
    return Router(directory, lambda: index, Clock()), directory


def test_requests_stay_on_the_local_replica_while_it_answers() -> None:
    router, directory = setup(self=Stub("self"), peer=Stub("peer"))
    for _ in range(5):
        assert ask(router) == ["self", "self"]
    assert directory.stubs["peer"].calls == 0


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
    ],
)
def test_a_local_refusal_before_any_answer_goes_to_a_peer(code: grpc.StatusCode) -> None:
    router, directory = setup(self=Stub("self", refuse=code), peer=Stub("peer"))
    assert ask(router) == ["peer", "peer"]
    assert (directory.stubs["self"].calls, directory.stubs["peer"].calls) == (1, 1)


@pytest.mark.parametrize("as_grpc", [False, True])
def test_in_process_and_grpc_errors_end_the_same_way(as_grpc: bool) -> None:
    # A request the node finds invalid is not retried, from either kind of stub.
    router, directory = setup(
        self=Stub("self", grpc.StatusCode.INVALID_ARGUMENT, as_grpc=as_grpc), peer=Stub("peer")
    )
    with pytest.raises(RouteError) as refused:
        ask(router)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.exhausted is None
    assert directory.stubs["peer"].calls == 0
    # Connection failures count against the local replica's circuit, whichever stub.
    router, directory = setup(self=Stub("self", grpc.StatusCode.UNAVAILABLE, as_grpc=as_grpc))
    for _ in range(FAILURES_TO_OPEN):
        with pytest.raises(RouteError) as failed:
            ask(router)
        assert failed.value.exhausted == "replicas-failed"
        assert "self" in str(failed.value)
    stats = router.stats(AGENT, "self")
    assert stats is not None
    assert stats.circuit == "open"


@pytest.mark.parametrize("kind", ["agent", "model"])
def test_each_attempt_carries_the_generation_of_its_replica(kind: str) -> None:
    router, directory = setup(peer=Stub("peer"), self=Stub("self", grpc.StatusCode.UNAVAILABLE))

    async def request() -> None:
        if kind == "agent":
            chunks = router.invoke_agent(node_pb2.InvokeAgentRequest(agent=AGENT), 30.0)
        else:
            chunks = router.proxy_model(AGENT, b"{}", 30.0)
        assert [c async for c in chunks]

    asyncio.run(request())
    # Ready in node-id order: peer (7), self (8); self is tried first, then the peer.
    assert (directory.stubs["self"].generations, directory.stubs["peer"].generations) == ([8], [7])
