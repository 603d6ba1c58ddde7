"""The routing table's way to the nodes: a real fleet, publisher and store, and node links
talking gRPC to scripted fake nodes on loopback — pushes, retries with backoff, a node
that holds a newer table, and revoked nodes that get none."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgefleet.v1 import node_pb2, node_pb2_grpc
from edgefleet_contract.desired import ModelWant, NodeDesired
from edgefleet_contract.routing import AgentRoute, DeploymentRoutes, RoutingIndex
from orchestrator.controller import insecure_channel
from orchestrator.events import EventLog
from orchestrator.fleet import node_link
from orchestrator.fleet.fleet import Fleet
from orchestrator.routes_publisher import RoutesPublisher
from orchestrator.store import SqliteStore

INDEX = RoutingIndex(deployments=(DeploymentRoutes(name="d", agents=(AgentRoute(name="a"),)),))
WAIT_S = 20.0
"""Bound on waiting for what must happen (never asserted as a timing)."""


class FakeNode(node_pb2_grpc.NodeServiceServicer):
    """A node that answers its info, streams its status, and takes routing tables.

    `holds` is the table generation it reports; `hidden` one it holds but does not
    report (it refuses anything older); the first `failures` pushes fail UNAVAILABLE.
    """

    def __init__(self, node_id: str, *, holds: int = 0, hidden: int = 0, failures: int = 0):
        self.node_id = node_id
        self.holds = holds
        self.hidden = hidden
        self.failures = failures
        self.received: list[int] = []
        self._changed = asyncio.Event()

    async def GetInfo(self, request: Any, context: Any) -> node_pb2.NodeInfo:
        return node_pb2.NodeInfo(node_id=self.node_id, version="test")

    async def WatchStatus(self, request: Any, context: Any) -> AsyncIterator[node_pb2.NodeStatus]:
        while True:
            yield node_pb2.NodeStatus(node_id=self.node_id, routes_generation=self.holds)
            self._changed.clear()
            await self._changed.wait()

    async def ApplyRoutes(self, request: Any, context: Any) -> node_pb2.ApplyRoutesResponse:
        generation = request.table.generation
        self.received.append(generation)
        if self.failures:
            self.failures -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
        held = max(self.holds, self.hidden)
        if generation < held:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"holds routing table {held}")
        self.holds, self.hidden = generation, 0
        self._changed.set()
        return node_pb2.ApplyRoutesResponse(generation=generation)


async def serve(node: FakeNode) -> tuple[Any, str]:
    server = grpc.aio.server()
    node_pb2_grpc.add_NodeServiceServicer_to_server(node, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def until(condition: Callable[[], bool], step: float = 0.02) -> None:
    for _ in range(int(WAIT_S / step)):
        if condition():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"not reached within {WAIT_S}s")


async def run_fleet(
    tmp_path: Path, nodes: list[FakeNode], *, revoked: dict[str, str] | None = None
) -> tuple[list[int], RoutesPublisher]:
    """Serve the nodes, connect a fleet to them, publish until every trusted node holds
    the current table; returns each node's final generation and the publisher."""
    store = SqliteStore.open(tmp_path / "controller.db")
    events = EventLog(store)
    holder: list[RoutesPublisher] = []
    fleet = Fleet(
        controller_id=store.controller_id,
        channel_factory=insecure_channel,
        events=events,
        failure_timeout=lambda: 30.0,
        on_change=lambda: holder[0].trigger() if holder else None,
        revoked=lambda: revoked or {},
    )
    publisher = RoutesPublisher(
        store, fleet, assignment=dict, index=lambda: INDEX, key_digests=lambda: ["k"]
    )
    holder.append(publisher)
    servers = []
    try:
        publisher.start()
        for node in nodes:
            server, address = await serve(node)
            servers.append(server)
            await fleet.add(node.node_id, address, "static")
        trusted = [n for n in nodes if n.node_id not in (revoked or {})]
        await until(
            lambda: (
                publisher.generation > 0 and all(n.holds == publisher.generation for n in trusted)
            )
        )
        return [n.holds for n in nodes], publisher
    finally:
        await publisher.close()
        await fleet.close()
        for server in servers:
            await server.stop(None)
        store.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_link, "PUSH_RETRY_MIN_S", 0.01)
    monkeypatch.setattr(node_link, "PUSH_RETRY_MAX_S", 0.05)


def test_every_node_gets_the_table_even_without_replicas(tmp_path: Path) -> None:
    one, two = FakeNode("n1"), FakeNode("n2")
    held, publisher = asyncio.run(run_fleet(tmp_path, [one, two]))
    assert held == [publisher.generation] * 2
    assert publisher.table.api_key_digests == ("k",)
    assert publisher.table.index == INDEX
    # Pushed once each: a node that reports the current table is not sent it again.
    assert one.received == [publisher.generation] == two.received


def test_a_failing_push_is_retried_until_it_lands(tmp_path: Path) -> None:
    flaky = FakeNode("n1", failures=3)
    held, publisher = asyncio.run(run_fleet(tmp_path, [flaky]))
    assert held == [publisher.generation]
    assert flaky.received == [publisher.generation] * 4


def test_a_node_reporting_a_newer_table_gets_one_numbered_above_it(tmp_path: Path) -> None:
    ahead = FakeNode("n1", holds=9)
    held, publisher = asyncio.run(run_fleet(tmp_path, [ahead]))
    assert publisher.generation > 9
    assert held == [publisher.generation]


def test_a_node_refusing_an_older_table_makes_the_generation_rise_above(
    tmp_path: Path,
) -> None:
    # It reports no table but holds 5 (as a node would after the controller's store was
    # restored from a backup): each refusal numbers the table anew, higher.
    secretive, plain = FakeNode("n1", hidden=5), FakeNode("n2")
    held, publisher = asyncio.run(run_fleet(tmp_path, [secretive, plain]))
    assert publisher.generation >= 5
    assert held == [publisher.generation] * 2
    refused = [g for g in secretive.received if g < 5]
    assert refused
    assert refused == sorted(refused)
    with SqliteStore.open(tmp_path / "controller.db") as store:
        assert store.routes_generation() == publisher.generation


def test_a_revoked_node_gets_no_table(tmp_path: Path) -> None:
    good, bad = FakeNode("n1"), FakeNode("n2")
    held, publisher = asyncio.run(run_fleet(tmp_path, [good, bad], revoked={"n2": "stolen"}))
    assert held == [publisher.generation, 0]
    assert bad.received == []


def test_a_starting_controller_makes_no_table_before_its_nodes_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node not heard from yet is not a node without replicas: the first table waits
    for it, or for the end of the startup grace."""

    async def scenario() -> None:
        store = SqliteStore.open(tmp_path / "controller.db")
        store.number_routes("an earlier table")
        fleet = Fleet(
            controller_id=store.controller_id,
            channel_factory=insecure_channel,
            events=EventLog(store),
            failure_timeout=lambda: 30.0,
            on_change=lambda: None,
        )
        publisher = RoutesPublisher(
            store, fleet, assignment=dict, index=lambda: INDEX, key_digests=tuple
        )
        node = FakeNode("n1")
        server, address = await serve(node)
        try:
            await fleet.add("n1", address, "static")
            await fleet.add("silent", "127.0.0.1:9", "static")  # nobody listens there
            assert publisher.generation == 1  # the last one made, until a new one is
            await until(lambda: fleet.links()[0].status is not None)
            assert not publisher.settled()
            monkeypatch.setattr("orchestrator.routes_publisher.STARTUP_GRACE_S", 0.0)
            assert publisher.settled()
            publisher.publish()
            await until(lambda: node.holds == publisher.generation == 2)
        finally:
            await fleet.close()
            await server.stop(None)
            store.close()

    asyncio.run(scenario())


def test_a_starting_controller_waits_for_the_nodes_its_assignment_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node with work in the stored assignment that discovery has not found again yet
    counts as not heard from: the first table waits for it too."""

    async def scenario() -> None:
        store = SqliteStore.open(tmp_path / "controller.db")
        fleet = Fleet(
            controller_id=store.controller_id,
            channel_factory=insecure_channel,
            events=EventLog(store),
            failure_timeout=lambda: 30.0,
            on_change=lambda: None,
        )
        working = NodeDesired(models=(ModelWant(alias="smol"),))
        assignment = {"n1": working, "later": working, "idle": NodeDesired()}
        publisher = RoutesPublisher(
            store, fleet, assignment=lambda: assignment, index=lambda: INDEX, key_digests=tuple
        )
        node = FakeNode("n1")
        server, address = await serve(node)
        try:
            await fleet.add("n1", address, "static")
            await until(lambda: fleet.links()[0].status is not None)
            assert not publisher.settled()  # `later` runs work and is not linked yet
            del assignment["later"]
            assert publisher.settled()  # `idle` runs nothing: no need to wait for it
            assignment["later"] = working
            monkeypatch.setattr("orchestrator.routes_publisher.STARTUP_GRACE_S", 0.0)
            assert publisher.settled()  # the grace is over: a table is made without it
        finally:
            await fleet.close()
            await server.stop(None)
            store.close()

    asyncio.run(scenario())
