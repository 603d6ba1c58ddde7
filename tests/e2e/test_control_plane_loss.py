"""Requests keep flowing when the controller dies: a real fleet in network namespaces,
steady traffic through a node's own gateway.

Three edge-nodes (the agent on n1 and n2, n3 with the model only) each serve the
OpenAI gateway on their lab address (HTTPS with their cluster certificate, an API
key made with `edgectl apikey create`). The test process, on the lab bridge, sends
steady traffic with the official `openai` client through n3's gateway, which routes
the agent to its peers from the controller's routing table, while the controller is
SIGKILLed and restarted, a node dies and comes back with the controller still down,
the link between n3 and n1 is cut, and n3 is kept on an old table while the agent
moves off n1. Then: a node serves its own agent without leaving the box, a peer's
certificate cannot command a node, and another cluster's cannot call it at all.

What is restarted or placed is read from the nodes themselves (their status: agents
and request counters; their llama.cpp server processes), not from the controller.
The tests share one fleet and run in file order; each starts from the steady state.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import openai
import pytest
from google.protobuf.message import Message

from edgefleet.v1 import node_pb2, node_pb2_grpc
from edgefleet_common.pki import key_pem, load_csr, new_key, node_csr
from edgefleet_contract.routes_wire import table_to_proto
from edgefleet_contract.routing_table import RoutingTable
from node_agent.routes_store import ROUTES_DIR, ROUTES_FILE
from orchestrator.trust.ca import ClusterCa
from tests.e2e.control_plane import (
    PREFERRED,
    RESTART_REASONS,
    current_generation,
    fingerprints,
    holders,
    routes_current,
    stub_as,
    wait_key_in_force,
)
from tests.e2e.gateway_tls import node_gateway_client
from tests.e2e.lab_fleet import (
    AGENT,
    ALIAS,
    MANIFEST,
    NODE_PORT,
    NODES,
    READY,
    LabFleet,
    Outcome,
    Traffic,
    failures,
    lab_fleet,
)
from tests.e2e.test_failover_faults import settle, summary
from tests.integration.test_node_daemon import require_model
from tests.integration.test_node_gateway import ask, state
from tests.netlab import Lab, lab_available
from tests.polling import wait_for

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.model]

GATEWAY = "n3"
"""The node whose gateway the traffic goes through: it hosts no replica of the agent."""
DENIED = grpc.StatusCode.PERMISSION_DENIED
STREAMING = {"ProxyModel", "InvokeAgent", "WatchStatus"}
RETRY_FROM_N1 = re.compile(r'retrying on another replica.*\bfailed"?[=:]\s*"?n1\b')

# The agent moved off n1: one replica, on n2 only (n2's assignment does not change).
MOVED = MANIFEST.replace("replicas: 2", "replicas: 1").replace(
    f'- id: "n1"\n      agents: ["{AGENT}"]\n', '- id: "n1"\n      agents: []\n'
)
assert MOVED.count(f'agents: ["{AGENT}"]') == 1, "the manifest no longer has the expected shape"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    reason = lab_available()
    if reason is not None:
        pytest.skip(reason)
    require_model()
    with Lab() as lab, lab_fleet(lab, tmp_path_factory.mktemp("control-plane")) as built:
        yield built


@pytest.fixture(scope="module")
def key(fleet: LabFleet) -> str:
    """An API key, in force on every node's gateway."""
    made = fleet.api_key()
    wait_key_in_force(fleet, made)
    return made


@pytest.fixture
def steady(fleet: LabFleet, key: str) -> LabFleet:
    """The controller up, the agent on its preferred nodes, every node on the current table."""
    # What an earlier test may have left down when it failed halfway.
    if fleet.controller.process.poll() is not None:
        fleet.restart_controller()
    for name in set(NODES) - set(fleet.nodes):
        fleet.start_node(name)
    wait_for(
        "the agent on its preferred nodes, as the nodes themselves report",
        lambda: fleet.ready_on() == PREFERRED and holders(fleet) == PREFERRED,
        120,
        fleet.explain,
    )
    wait_for("every node on the current table", lambda: routes_current(fleet), 60, fleet.explain)
    return fleet


def through(fleet: LabFleet, key: str, name: str = GATEWAY) -> Traffic:
    """Steady traffic through node `name`'s gateway."""
    return Traffic(fleet.node_gateway_url(name), api_key=key, http_client=node_gateway_client(name))


def assert_none_failed(outcomes: list[Outcome], fleet: LabFleet) -> None:
    """No request failed: agent requests are whole answers (always retriable) and streams
    of the model are served by the gateway's own node."""
    retriable, cut = failures(outcomes)
    report = summary(outcomes)
    print(f"\n{report}\ncut mid-stream: {len(cut)}")
    assert outcomes, "no traffic was sent"
    assert not retriable, f"retriable requests failed:\n{report}\n{fleet.explain()}"
    assert not cut, f"streams were cut mid-answer:\n{report}"


def served_since(traffic: Traffic, node: str, since: float) -> int:
    """How many agent requests started after `since` that `node` served."""
    outcomes = traffic.snapshot()
    return sum(1 for o in outcomes if o.kind == "agent" and o.node == node and o.started > since)


# -- the controller dies -------------------------------------------------------------------


@pytest.mark.timeout(400)
def test_a_killed_controller_loses_no_request_and_its_restart_restarts_nothing(
    steady: LabFleet, key: str
) -> None:
    fleet = steady
    with through(fleet, key) as traffic:
        settle(traffic, fleet)
        before = fingerprints(fleet)
        last_event = fleet.last_event_id()
        fleet.kill_controller()
        killed_at = time.time()
        settle(traffic, fleet, count=24)
        assert sum(served_since(traffic, n, killed_at) for n in PREFERRED), (
            f"the agent was not served without the controller\n{summary(traffic.snapshot())}"
        )
        fleet.restart_controller()
        wait_for(
            "the restarted controller sees the fleet as it was",
            lambda: fleet.ready_on() == PREFERRED and routes_current(fleet),
            60,
            fleet.explain,
        )
        settle(traffic, fleet)
    assert_none_failed(traffic.stop(), fleet)
    after = fingerprints(fleet)
    for name, (servers, counters) in before.items():
        now_servers, now_counters = after[name]
        assert now_servers == servers, f"{name} restarted its model: {servers} → {now_servers}"
        assert set(now_counters) == set(counters), f"{name}: agents {counters} → {now_counters}"
        restarted = {a: n for a, n in now_counters.items() if n < counters[a]}
        assert not restarted, f"{name} restarted agents (counters went back): {restarted}"
    # Nothing placed twice: each node's own report.
    assert holders(fleet) == PREFERRED
    churn = [e for e in fleet.events(last_event) if e.reason in RESTART_REASONS]
    assert not churn, "the restart started or stopped work:\n" + "\n".join(
        f"  {e.reason} {e.node_id}: {e.message}" for e in churn
    )


@pytest.mark.timeout(400)
def test_without_a_controller_a_killed_node_is_routed_around_and_serves_again_from_its_state(
    steady: LabFleet, key: str
) -> None:
    fleet = steady
    table_generation = fleet.node_status("n1").routes_generation
    with through(fleet, key) as traffic:
        settle(traffic, fleet)
        fleet.kill_controller()
        settle(traffic, fleet)
        fleet.kill("n1")
        killed_at = time.time()
        settle(traffic, fleet, count=20)
        restarted_at = time.time()  # n1 may serve as soon as its start returns
        fleet.start_node("n1")
        wait_for(
            "n1 back with its saved desired state and routing table, no controller",
            lambda: (
                fleet.node_status("n1").routes_generation == table_generation
                and fleet.reported_holders(["n1"]) == {"n1"}
            ),
            90,
            lambda: fleet.nodes["n1"].log(),
        )
        back_at = time.time()
        wait_for(
            "n3 sends the agent to n1 again",
            lambda: served_since(traffic, "n1", back_at) > 0,
            90,
            lambda: f"{summary(traffic.snapshot()[-20:])}\n{fleet.nodes[GATEWAY].log()}",
        )
        counters = {a.name: a.requests_total for a in fleet.node_status("n1").agents}
        assert counters.get(AGENT, 0) > 0, f"n1's own counters show no request: {counters}"
        assert fleet.controller.process.poll() is not None, "the controller came back by itself"
        fleet.restart_controller()
        wait_for(
            "the restarted controller sees n1 serving again",
            lambda: fleet.ready_on() == PREFERRED and routes_current(fleet),
            60,
            fleet.explain,
        )
        settle(traffic, fleet)
    outcomes = traffic.stop()
    down = [o for o in outcomes if killed_at < o.started < restarted_at]
    assert down, "no request was sent while n1 was dead"
    assert not [o for o in down if o.node == "n1"], "n1 served while it was dead"
    assert_none_failed(outcomes, fleet)
    assert holders(fleet) == PREFERRED, "the agent runs twice after the restarts"


# -- partitions and stale tables -------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_cut_between_two_nodes_loses_no_request(steady: LabFleet, key: str) -> None:
    fleet = steady
    gateway, n1 = fleet.hosts[GATEWAY], fleet.hosts["n1"]
    with through(fleet, key) as traffic:
        settle(traffic, fleet)
        gateway.cut_from(n1.ip)
        try:
            cut_at = time.time()
            settle(traffic, fleet, count=24)
            # The controller still reaches both: nothing failed over, n3 routed around.
            assert fleet.ready_on() == PREFERRED, fleet.explain()
            assert served_since(traffic, "n2", cut_at) > 0
        finally:
            gateway.heal_cuts()
        healed_at = time.time()
        wait_for(
            "n3 sends the agent to n1 again",
            lambda: served_since(traffic, "n1", healed_at) > 0,
            90,
            lambda: f"{summary(traffic.snapshot()[-20:])}\n{fleet.nodes[GATEWAY].log()}",
        )
    assert_none_failed(traffic.stop(), fleet)


def held_table(fleet: LabFleet, name: str) -> RoutingTable:
    """The routing table node `name` keeps on disk."""
    path = fleet.nodes[name].data_dir / ROUTES_DIR / ROUTES_FILE
    return RoutingTable.model_validate_json(path.read_text())


def agent_entry(fleet: LabFleet, name: str) -> tuple[int, int] | None:
    """(state, requests_total) of the agent as node `name` reports it; None when absent."""
    for agent in fleet.node_status(name).agents:
        if agent.name == AGENT:
            return agent.state, agent.requests_total
    return None


@pytest.mark.timeout(400)
def test_a_node_on_an_old_table_never_reaches_a_replica_moved_away(
    steady: LabFleet, key: str, tmp_path: Path
) -> None:
    fleet = steady
    gateway = fleet.hosts[GATEWAY]
    assert fleet.lab.ip is not None
    # Only the controller loses n3 (its API port, from the bridge address); the test's
    # traffic to n3's gateway still arrives.
    gateway.cut_from(fleet.lab.ip, port=NODE_PORT)
    try:
        wait_for(
            "the controller lost n3",
            lambda: fleet.node_states().get(GATEWAY) in ("suspect", "not-ready"),
            15,
            fleet.explain,
        )
        moved = tmp_path / "moved.yaml"
        moved.write_text(MOVED)
        fleet.controller.edgectl("apply", "-f", str(moved))
        wait_for(
            "the agent moved off n1 (n1's own report)",
            lambda: fleet.ready_on() == {"n2"} and (agent_entry(fleet, "n1") or (0,))[0] != READY,
            90,
            fleet.explain,
        )
        fenced = agent_entry(fleet, "n1")
        stale = held_table(fleet, GATEWAY)
        current = current_generation(fleet)
        assert stale.generation < current, f"n3 got the new table ({stale.generation})"
        assert "n1" in {r.node_id for r in stale.replicas(AGENT, "agent")}, stale
        log_from = len(fleet.nodes[GATEWAY].process.lines)
        served = ask_some(fleet, key, 12)
        print(f"\nrouted with table {stale.generation} (current {current}): {served}")
        assert "n2" in served, f"nothing was served through n3: {served}"
        # n1's refusal is retried on n2, and n3 leaves n1 out until a newer table comes.
        assert not [s for s in served if s.startswith("failed")], served
        # With n2 out of n3's reach too, n3's old table leaves it only n1 to try.
        gateway.cut_from(fleet.hosts["n2"].ip)
        for _ in range(6):
            served += ask_some(fleet, key, 1)
            if refused_by_n1(fleet, log_from):
                break
        print(f"then with n2 out of reach: {served[12:]}")
        assert refused_by_n1(fleet, log_from), (
            f"n3 never tried n1 with its old table: {served}\n{fleet.nodes[GATEWAY].log()}"
        )
        assert "n1" not in served, f"a replica moved off n1 served: {served}"
        assert agent_entry(fleet, "n1") == fenced, "n1's own counters moved after the move"
    finally:
        gateway.heal_cuts()
    try:
        wait_for(
            "n3 on the current table once the controller reaches it again",
            lambda: routes_current(fleet),
            60,
            fleet.explain,
        )
    finally:  # back to the steady state, whatever happened
        restored = tmp_path / "restored.yaml"
        restored.write_text(MANIFEST)
        fleet.controller.edgectl("apply", "-f", str(restored), check=False)


def ask_some(fleet: LabFleet, key: str, count: int) -> list[str]:
    """Who served each of `count` agent requests through n3 ("failed: …" for a failure)."""
    served: list[str] = []
    with fleet.node_client(GATEWAY, key) as client:
        for _ in range(count):
            try:
                served.append(ask(client, AGENT)[0])
            except openai.APIError as exc:
                served.append(f"failed: {exc}")
    return served


def refused_by_n1(fleet: LabFleet, log_from: int) -> bool:
    """Whether n3 logged, since line `log_from`, that n1 refused a request for the agent
    (and it tried another replica)."""
    lines = fleet.nodes[GATEWAY].process.lines[log_from:]
    return any(RETRY_FROM_N1.search(line) for line in lines)


# -- local first, and who may call a node ---------------------------------------------------


@pytest.mark.timeout(120)
def test_a_request_for_a_nodes_own_agent_never_leaves_the_node(steady: LabFleet, key: str) -> None:
    fleet = steady
    before = {n: dict(_counters(fleet, n)) for n in PREFERRED}
    with fleet.node_client("n1", key) as client:
        served = [ask(client, AGENT, stream=stream)[0] for stream in (False, True, False, True)]
    assert served == ["n1"] * 4
    assert _counters(fleet, "n2") == before["n2"], "n2 saw requests sent to n1 for its own agent"
    assert _counters(fleet, "n1")[AGENT] == before["n1"][AGENT] + 4


@pytest.mark.timeout(120)
def test_a_peer_cannot_command_a_node_and_another_cluster_cannot_call_it(
    steady: LabFleet, tmp_path: Path
) -> None:
    fleet = steady
    target = fleet.nodes["n1"]
    status = fleet.node_status("n1")
    routes = node_pb2.ApplyRoutesRequest(table=table_to_proto(RoutingTable(generation=10**6)))
    commands: tuple[tuple[str, Message], ...] = (
        ("ApplyState", state(10**6, AGENT)),
        ("ApplyRoutes", routes),
    )
    # A node of this cluster (n2's certificate and key, as its gateway uses them).
    n2_pki = fleet.nodes["n2"].data_dir / "pki"
    n2_key, n2_cert = (n2_pki / "node.key").read_bytes(), (n2_pki / "node.crt").read_bytes()
    with stub_as("n1", target.address, n2_key, n2_cert) as stub:
        for method, request in commands:
            with pytest.raises(grpc.RpcError) as denied:
                getattr(stub, method)(request, timeout=10)
            assert denied.value.code() == DENIED, f"{method}: {denied.value}"
            assert "node `n2`" in str(denied.value.details())
        # What a peer may do: send a request (an empty one, refused as invalid).
        with pytest.raises(grpc.RpcError) as invalid:
            stub.InvokeAgentUnary(node_pb2.InvokeAgentRequest(), timeout=10)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = fleet.node_status("n1")
    assert after.generation == status.generation, "a peer's ApplyState took effect"
    assert after.routes_generation == status.routes_generation, "a peer's ApplyRoutes took effect"

    # A node of another cluster, even under a fleet node's id: no handshake.
    other = ClusterCa.load_or_create(tmp_path / "other-ca", "other")
    private = new_key()
    issued = other.issue_node(load_csr(node_csr(private, "n2")), "n2", timedelta(hours=1))
    with stub_as("n1", target.address, key_pem(private), issued.pem) as stub:
        calls: tuple[tuple[str, Message], ...] = (
            *commands,
            ("GetInfo", node_pb2.GetInfoRequest()),
            ("InvokeAgentUnary", node_pb2.InvokeAgentRequest(agent=AGENT)),
            ("ProxyModel", node_pb2.ProxyModelRequest(model=ALIAS)),
        )
        for method, request in calls:
            with pytest.raises(grpc.RpcError) as refused:
                _call(stub, method, request)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, f"{method}: {refused.value}"


# -- helpers --------------------------------------------------------------------------------


def _counters(fleet: LabFleet, name: str) -> dict[str, int]:
    return {a.name: a.requests_total for a in fleet.node_status(name).agents}


def _call(stub: node_pb2_grpc.NodeServiceStub, method: str, request: Message) -> object:
    """One call; for a streaming method, its first message."""
    reply = getattr(stub, method)(request, timeout=10)
    return next(iter(reply)) if method in STREAMING else reply
