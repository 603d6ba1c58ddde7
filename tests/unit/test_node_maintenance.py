"""Cordon, drain and uncordon through the controller API's handlers, on a real store, fleet
and reconciler (no node connected): refusals, events, persistence, what the scheduler
sees, `NodeDrained`, and the drain progress computed from what nodes report."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgefleet.v1 import common_pb2, controller_pb2, node_pb2
from edgefleet_contract.desired import AgentWant, ModelWant, NodeDesired
from orchestrator.api import ControllerService
from orchestrator.controller import insecure_channel
from orchestrator.drain_progress import DrainInputs, drain_progress, hosts
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.fleet.node_link import NodeLink
from orchestrator.manifest import load_text
from orchestrator.reconciler import Reconciler
from orchestrator.scheduler.model import Plan, Unplaced
from orchestrator.store import SqliteStore

MANIFEST = """\
deployment:
  type: distributed-edge
  name: desk
  models: [{alias: small}]
  agents: [{name: clerk, model: small}]
  nodes:
    - {id: front, agents: [clerk], models: [small]}
    - {id: back}
"""
Request = controller_pb2.NodeMaintenanceRequest


class Aborted(Exception):
    """What Context.abort raises, as grpc's does."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class Context:
    """What the handlers use of a grpc.aio.ServicerContext (a plaintext call from here)."""

    def time_remaining(self) -> float:
        return 10.0

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(code, message)


@dataclass
class Controller:
    """The controller's parts over one store, as `Controller.start` wires them."""

    store: SqliteStore
    events: EventLog
    fleet: Fleet
    reconciler: Reconciler
    api: ControllerService

    @classmethod
    def open(cls, path: Path) -> Controller:
        store = SqliteStore.open(path)
        events = EventLog(store)
        fleet = Fleet(
            controller_id=store.controller_id,
            channel_factory=insecure_channel,
            events=events,
            failure_timeout=lambda: 3.0,
            on_change=lambda: None,
        )
        fleet.keep_marks(store)  # as the controller does before its first pass
        reconciler = Reconciler(store, fleet, events, local_node="local")
        unused: Any = None
        return cls(
            store,
            events,
            fleet,
            reconciler,
            ControllerService(store, fleet, reconciler, events, unused),
        )

    def call(self, method: str, request: Any) -> Any:
        return asyncio.run(getattr(self.api, method)(request, Context()))

    def reasons(self) -> list[str]:
        return [e.reason for e in self.store.events() if e.object.startswith("node/")]


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    opened = Controller.open(tmp_path / "controller.db")
    opened.call("Apply", controller_pb2.ApplyRequest(manifest=MANIFEST, source="desk.yaml"))
    try:
        yield opened
    finally:
        opened.store.close()


def test_cordon_drain_uncordon_mark_the_node_and_record_events(controller: Controller) -> None:
    first = controller.call("CordonNode", Request(node_id="front", reason="disk swap"))
    assert first.changed
    assert (first.node.id, first.node.mark, first.node.mark_reason) == (
        "front",
        "cordoned",
        "disk swap",
    )
    again = controller.call("CordonNode", Request(node_id="front"))
    assert not again.changed
    assert controller.call("DrainNode", Request(node_id="front")).changed
    # Cordoning a draining node leaves it draining; draining it again changes nothing.
    assert not controller.call("CordonNode", Request(node_id="front")).changed
    assert not controller.call("DrainNode", Request(node_id="front")).changed
    assert controller.store.node_marks()["front"].mark == "draining"
    lifted = controller.call("UncordonNode", Request(node_id="front"))
    assert lifted.changed
    assert lifted.node.mark == ""
    assert not controller.call("UncordonNode", Request(node_id="front")).changed
    assert controller.reasons() == ["NodeCordoned", "NodeDraining", "NodeUncordoned"]
    messages = [e.message for e in controller.store.events() if e.object == "node/front"]
    assert messages[0] == (
        "front cordoned: no new work goes there; what runs there stays (reason: disk swap)"
    )
    assert controller.store.node_marks() == {}


@pytest.mark.parametrize(
    ("method", "request_", "code", "message"),
    [
        ("CordonNode", Request(node_id="nowhere"), grpc.StatusCode.NOT_FOUND,
         "no node named `nowhere`; nodes: back, front"),
        ("DrainNode", Request(node_id=""), grpc.StatusCode.INVALID_ARGUMENT,
         "node_id must be 1-63 characters"),
        ("UncordonNode", Request(node_id="x" * 64), grpc.StatusCode.INVALID_ARGUMENT,
         "node_id must be 1-63 characters"),
        ("CordonNode", Request(node_id="front", reason="r" * 201), grpc.StatusCode.INVALID_ARGUMENT,
         "reason is longer than 200 characters"),
        ("GetDrainProgress", controller_pb2.GetDrainProgressRequest(node_id="nowhere"),
         grpc.StatusCode.NOT_FOUND, "no node named `nowhere`; nodes: back, front"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_and_change_nothing(
    controller: Controller, method: str, request_: Any, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(Aborted) as refused:
        controller.call(method, request_)
    assert (refused.value.code, refused.value.message) == (code, message)
    assert controller.store.node_marks() == {}
    assert controller.reasons() == []


def test_marks_hold_after_a_restart_and_keep_work_away(tmp_path: Path) -> None:
    path = tmp_path / "controller.db"
    first = Controller.open(path)
    first.call("Apply", controller_pb2.ApplyRequest(manifest=MANIFEST, source="desk.yaml"))
    assert first.reconciler.preview(first.reconciler.deployments()).assignment["front"].agents
    first.call("CordonNode", Request(node_id="front"))
    first.store.close()

    second = Controller.open(path)
    try:
        assert second.fleet.marks.get("front") is not None
        # Not connected, but listed with its mark, and not given its pinned work.
        listed = second.call("ListNodes", controller_pb2.ListNodesRequest()).nodes
        assert [(n.id, n.mark, n.reason) for n in listed] == [
            ("front", "cordoned", "not connected")
        ]
        views = second.fleet.scheduler_views()
        assert [(v.id, v.state, v.cordoned) for v in views] == [("front", "absent", True)]
        plan = second.reconciler.preview(second.reconciler.deployments())
        assert "front" not in plan.assignment or not plan.assignment["front"].agents
        short = {(u.kind, u.name): u.reason for u in plan.plan.unplaced}
        assert sorted(short) == [("agent", "clerk"), ("model", "small")]
        assert all("node `front` is cordoned" in reason for reason in short.values())
        # Uncordoned, it gets its pinned work again.
        second.call("UncordonNode", Request(node_id="front"))
        again = second.reconciler.preview(second.reconciler.deployments())
        assert [a.name for a in again.assignment["front"].agents] == ["clerk"]
    finally:
        second.store.close()


def test_drain_progress_of_a_node_not_connected_says_why_it_waits(controller: Controller) -> None:
    controller.call("DrainNode", Request(node_id="back"))
    progress = controller.call(
        "GetDrainProgress", controller_pb2.GetDrainProgressRequest(node_id="back")
    )
    assert (progress.mark, progress.drained, list(progress.items)) == ("draining", False, [])
    assert progress.waiting == "node `back` is not connected: it cannot report what it still runs"


def link(node: str, status: node_pb2.NodeStatus | None, desired: NodeDesired | None) -> NodeLink:
    found = NodeLink(
        node,
        "127.0.0.1:9",
        "static",
        controller_id="test",
        channel_factory=insecure_channel,
        on_status=lambda link, changed: None,
        on_stream=lambda link, reason: None,
    )
    found.health, found.status, found.desired = "ready", status, desired
    return found


def test_a_draining_node_seen_empty_is_drained_once(controller: Controller) -> None:
    fleet = controller.fleet
    fleet.mark("back", "draining", "")
    busy = link(
        "back",
        node_pb2.NodeStatus(generation=4, agents=[common_pb2.AgentStatus(name="clerk")]),
        NodeDesired(generation=4),
    )
    fleet.check_drained(busy)
    behind = link("back", node_pb2.NodeStatus(generation=3), NodeDesired(generation=4))
    fleet.check_drained(behind)  # has not applied its empty assignment yet
    assert "NodeDrained" not in controller.reasons()
    empty = link("back", node_pb2.NodeStatus(generation=4), NodeDesired(generation=4))
    fleet.check_drained(empty)
    fleet.check_drained(empty)
    assert controller.reasons().count("NodeDrained") == 1
    assert controller.store.node_marks()["back"].drained_at is not None
    assert fleet.state_of(empty) == "draining"
    # Health has its say: a draining node that breaks shows its failure.
    empty.health = "not-ready"
    assert fleet.state_of(empty) == "not-ready"


# -- drain progress, computed -----------------------------------------------------------------

SMALL = ModelWant(alias="small")
CLERK = AgentWant(name="clerk", model="small")


def status(generation: int, agents: dict[str, Any], models: dict[str, Any]) -> node_pb2.NodeStatus:
    return node_pb2.NodeStatus(
        generation=generation,
        agents=[common_pb2.AgentStatus(name=n, state=s) for n, s in agents.items()],
        models=[common_pb2.ModelStatus(alias=a, state=s) for a, s in models.items()],
    )


READY_AGENT, READY_MODEL = common_pb2.AGENT_STATE_READY, common_pb2.MODEL_STATE_READY


def inputs(**changes: Any) -> DrainInputs:
    here = NodeDesired(generation=5, agents=(CLERK,), models=(SMALL,))
    there = NodeDesired(generation=7, agents=(CLERK,), models=(SMALL,))
    fields: dict[str, Any] = {
        "node_id": "front",
        "state": "draining",
        "mark": None,
        "status": status(5, {"clerk": READY_AGENT}, {"small": READY_MODEL}),
        "desired": here,
        "assignment": {"front": here, "back": there},
        "statuses": {"back": status(7, {"clerk": common_pb2.AGENT_STATE_STARTING}, {})},
        "plan": None,
        "deployments": [],
    }
    fields.update(changes)
    return DrainInputs(**fields)


def test_progress_shows_each_item_moving_with_its_state_there() -> None:
    progress = drain_progress(inputs())
    assert [(i.kind, i.name, i.state, i.blocked) for i in progress.items] == [
        ("agent", "clerk", "ready", ""),
        ("model", "small", "ready", ""),
    ]
    assert [(t.node_id, t.state) for t in progress.items[0].targets] == [("back", "starting")]
    assert [(t.node_id, t.state) for t in progress.items[1].targets] == [("back", "pending")]
    assert not progress.drained
    assert progress.waiting == "node `front` is not draining"


def test_progress_says_why_an_item_cannot_move() -> None:
    why = "node `front` is draining; no other ready node of deployment `desk` can take it"
    plan = Plan(unplaced=(Unplaced("agent", "clerk", "desk", 1, why),))
    alone = {"front": NodeDesired(generation=5, agents=(CLERK,), models=(SMALL,))}
    progress = drain_progress(inputs(plan=plan, assignment=alone, statuses={}))
    assert [(i.name, i.blocked) for i in progress.items] == [
        ("clerk", why),
        ("small", "agent `clerk` uses it here and cannot move"),
    ]
    single = load_text(
        "deployment:\n  type: single-device\n  name: box\n  models: [{alias: small}]\n"
        "  agents: [{name: clerk, model: small}]\n"
    ).desired
    fixed = drain_progress(inputs(assignment=alone, statuses={}, deployments=[single]))
    assert fixed.items[0].blocked == "single-device deployment `box` runs it only on its local node"


def test_progress_of_an_emptied_node_is_drained() -> None:
    empty = NodeDesired(generation=6)
    stopping = drain_progress(
        inputs(
            status=status(6, {"clerk": common_pb2.AGENT_STATE_STOPPING}, {}),
            desired=empty,
            assignment={"front": empty},
        )
    )
    assert [(i.name, i.state, i.blocked) for i in stopping.items] == [("clerk", "stopping", "")]
    assert not stopping.drained
    done = drain_progress(
        inputs(status=status(6, {}, {}), desired=empty, assignment={"front": empty})
    )
    assert done.drained
    assert not done.items
    failed = drain_progress(inputs(state="not-ready", status=status(6, {}, {}), desired=empty))
    assert not failed.drained


def test_progress_names_only_the_nodes_that_took_an_item_over() -> None:
    here = NodeDesired(generation=5, agents=(CLERK,), models=(SMALL,))
    old = NodeDesired(generation=3, agents=(CLERK,), models=(SMALL,))
    new = NodeDesired(generation=7, agents=(CLERK,), models=(SMALL,))
    before = hosts({"front": here, "side": old}, "front")
    assert before == {("agent", "clerk"): {"side"}, ("model", "small"): {"side"}}
    assignment = {"front": here, "side": old, "back": new}
    progress = drain_progress(inputs(assignment=assignment, hosts_before=before))
    assert [[t.node_id for t in i.targets] for i in progress.items] == [["back"], ["back"]]
    # Not known when the drain began (a restarted controller): every other node.
    unknown = drain_progress(inputs(assignment=assignment))
    assert [t.node_id for t in unknown.items[0].targets] == ["back", "side"]
