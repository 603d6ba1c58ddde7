"""Node links and the controller's leader term: a standby (term 0) watches but never pushes,
a new term reopens the status stream and pushes with it, and a node that follows a newer
leader is not pushed to again until a new term or a new state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

from edgefleet.v1 import node_pb2, node_pb2_grpc
from edgefleet_contract.desired import NodeDesired
from edgefleet_contract.wire import NEWER_LEADER
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.fleet.node_link import NodeLink
from orchestrator.store import SqliteStore

WAIT_S = 20.0
"""Bound on waiting for what must happen (never asserted as a timing)."""


class TermNode(node_pb2_grpc.NodeServiceServicer):
    """A node that follows leader terms as a real one does, and records what it was sent."""

    def __init__(self, node_id: str, *, term: int = 0) -> None:
        self.node_id = node_id
        self.term = term
        self.generation = 0
        self.routes_generation = 0
        self.watch_terms: list[int] = []
        self.pushes: list[tuple[str, int]] = []
        """("state" | "routes", leader term) of every push received, taken or not."""

    async def GetInfo(self, request: Any, context: Any) -> node_pb2.NodeInfo:
        return node_pb2.NodeInfo(node_id=self.node_id, version="test")

    async def WatchStatus(self, request: Any, context: Any) -> AsyncIterator[node_pb2.NodeStatus]:
        self.watch_terms.append(request.leader_term)
        self.term = max(self.term, request.leader_term)
        while True:  # a heartbeat every few milliseconds: each one wakes the link's pushes
            yield node_pb2.NodeStatus(
                node_id=self.node_id,
                generation=self.generation,
                routes_generation=self.routes_generation,
                leader_term=self.term,
            )
            await asyncio.sleep(0.005)

    async def _admit(self, what: str, term: int, context: Any) -> None:
        self.pushes.append((what, term))
        if term < self.term or (term == 0 and self.term):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"pushed at leader term {term}, this node follows {self.term}: {NEWER_LEADER}",
            )
        self.term = term

    async def ApplyState(self, request: Any, context: Any) -> node_pb2.ApplyStateResponse:
        await self._admit("state", request.leader_term, context)
        self.generation = request.generation
        return node_pb2.ApplyStateResponse(generation=request.generation)

    async def ApplyRoutes(self, request: Any, context: Any) -> node_pb2.ApplyRoutesResponse:
        await self._admit("routes", request.leader_term, context)
        self.routes_generation = request.table.generation
        return node_pb2.ApplyRoutesResponse(generation=request.table.generation)


def channel(node_id: str, address: str) -> Any:
    return grpc.aio.insecure_channel(address)


async def serve(node: TermNode) -> tuple[Any, str]:
    server = grpc.aio.server()
    node_pb2_grpc.add_NodeServiceServicer_to_server(node, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def until(what: str, condition: Callable[[], bool], step: float = 0.01) -> None:
    for _ in range(int(WAIT_S / step)):
        if condition():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"not reached within {WAIT_S}s: {what}")


def routes(generation: int) -> node_pb2.ApplyRoutesRequest:
    return node_pb2.ApplyRoutesRequest(
        table=node_pb2.RoutingTable(generation=generation, controller_id="c")
    )


def test_a_standby_watches_without_pushing_and_pushes_once_it_leads(tmp_path: Path) -> None:
    node = TermNode("n1")
    term = [0]

    async def scenario() -> None:
        store = SqliteStore.open(tmp_path / "controller.db")
        fleet = Fleet(
            controller_id="c",
            channel_factory=channel,
            events=EventLog(store),
            failure_timeout=lambda: 30.0,
            on_change=lambda: None,
            term=lambda: term[0],
        )
        server, address = await serve(node)
        try:
            link = await fleet.add("n1", address, "static")
            link.want(NodeDesired(generation=3, controller_id="c"))
            link.want_routes(routes(2))
            await until("the link watches", lambda: link.connected and link.status is not None)
            heard = link.last_heard
            # Statuses keep coming (each one wakes the pushes): none goes out at term 0.
            await until("more statuses", lambda: link.last_heard != heard)
            assert node.watch_terms == [0]
            assert node.pushes == []
            term[0] = 5
            fleet.new_term()
            await until("pushed", lambda: node.generation == 3 and node.routes_generation == 2)
            assert node.watch_terms == [0, 5]
            # Every push carries the term it was made at: none was made as a standby.
            assert sorted(node.pushes) == [("routes", 5), ("state", 5)]
            assert link.health == "ready"
        finally:
            await fleet.close()
            await server.stop(None)
            store.close()

    asyncio.run(scenario())


def test_a_node_following_a_newer_leader_is_not_pushed_to_in_a_loop(tmp_path: Path) -> None:
    node = TermNode("n1", term=9)
    term = [5]
    statuses: list[int] = []

    async def scenario() -> None:
        link = NodeLink(
            "n1",
            "",
            "static",
            controller_id="c",
            channel_factory=channel,
            on_status=lambda link, changed: statuses.append(link.observed_generation),
            on_stream=lambda link, reason: None,
            term=lambda: term[0],
        )
        server, link.address = await serve(node)
        try:
            link.start()
            link.want(NodeDesired(generation=3, controller_id="c"))
            link.want_routes(routes(2))
            await until("refused", lambda: link.state_refused_at == 5 == link.routes_refused_at)
            assert NEWER_LEADER in link.push_error
            assert NEWER_LEADER in link.routes_error
            seen = len(statuses)
            await until("many statuses since", lambda: len(statuses) > seen + 20)
            assert sorted(node.pushes) == [("routes", 5), ("state", 5)]
            # A new state is tried once more (and refused once more).
            link.want(NodeDesired(generation=4, controller_id="c"))
            await until("tried again", lambda: len(node.pushes) == 3)
            assert node.pushes[-1] == ("state", 5)
            # A newer term than the node's: pushed and taken.
            term[0] = 10
            link.new_term()
            await until("taken", lambda: node.generation == 4 and node.routes_generation == 2)
            assert node.watch_terms == [5, 10]
            assert link.state_refused_at == 0 == link.routes_refused_at
        finally:
            await link.close()
            await server.stop(None)

    asyncio.run(scenario())
