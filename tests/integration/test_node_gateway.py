"""The gateway on every edge-node, with real processes: local first, peers over mutual TLS,
fencing, failover, autonomy, roles and API keys.

Two real edge-nodes run the llama.cpp runtime with SmolLM2-135M. The test plays the
controller (it holds a controller certificate from the run's CA): it applies their
desired states and pushes routing tables. Apps talk to a node's gateway with the
official `openai` client (`max_retries=0`). Everything listens on 127.0.0.1, but one
gateway on 0.0.0.0 (reached over loopback only).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from edgefleet.v1 import common_pb2, node_pb2, node_pb2_grpc
from edgefleet_common.pki import key_pem, load_csr, new_key, node_csr, node_server_name
from edgefleet_common.ports import free_port
from edgefleet_contract.api_keys import parse_api_key
from edgefleet_contract.routes_wire import table_to_proto
from edgefleet_contract.routing import (
    AgentRoute,
    DeploymentRoutes,
    EscalationEndpoint,
    ModelRoute,
    RoutingIndex,
)
from edgefleet_contract.routing_table import ReplicaRoute, RoutingTable, TargetRoutes
from tests.cluster_pki import node_options
from tests.cluster_pki import test_ca as run_ca
from tests.fakes.openai_api import FakeOpenAIServer, reply_text
from tests.integration.node_process import NodeProcess, start_node, unique_id
from tests.integration.test_node_daemon import apply_request, require_model, wait_ready

pytestmark = pytest.mark.slow

ALIAS = "smollm2-135m"
INSTRUCTIONS = "You are a helpful assistant. Answer in one short sentence."
KEY = "efk_0e1f2a3b_" + "5c" * 24
"""A gateway API key the routing tables list (by digest)."""
ESCALATION_ENV = "EDGEFLEET_TEST_ESCALATION_KEY"
ESCALATION_SECRET = "sk-cloud-test"
CLOUD_MODEL = "cloud-large"
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
DENIED = grpc.StatusCode.PERMISSION_DENIED


def state(generation: int, *agents: str, helper_note: str = "") -> node_pb2.ApplyStateRequest:
    """SmolLM2 and the named agents (no tools); `helper_note` changes the helper's spec."""
    specs = [
        common_pb2.AgentSpec(
            name=name,
            model=ALIAS,
            instructions=INSTRUCTIONS + (helper_note if name == "helper" else ""),
        )
        for name in agents
    ]
    return apply_request(generation, [common_pb2.ModelSpec(alias=ALIAS)], specs)


@dataclass
class Edge:
    """Two nodes and their gateways, as the test (the controller) set them up."""

    n1: NodeProcess
    n2: NodeProcess
    gateway1: int
    gateway2: int

    def client(self, port: int | None = None) -> openai.OpenAI:
        url = f"http://127.0.0.1:{port or self.gateway1}/v1"
        return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)

    def table(
        self, generation: int, helper_at: int = 1, escalation: EscalationEndpoint | None = None
    ) -> node_pb2.ApplyRoutesRequest:
        """assistant and the model on both nodes, helper on n2 alone (assigned at
        `helper_at`)."""
        one = ReplicaRoute(node_id=self.n1.node_id, address=self.n1.address, generation=1)
        two = ReplicaRoute(node_id=self.n2.node_id, address=self.n2.address, generation=1)
        helper = two.model_copy(update={"generation": helper_at})
        deployment = DeploymentRoutes(
            name="edge",
            distributed=True,
            strategy="peak-ewma",
            agents=(AgentRoute(name="assistant"), AgentRoute(name="helper")),
            models=(ModelRoute(alias=ALIAS, tasks=("chat",), primary=True),),
            escalation=escalation,
        )
        table = RoutingTable(
            generation=generation,
            controller_id="test-controller",
            index=RoutingIndex(deployments=(deployment,)),
            targets=(
                TargetRoutes(name="assistant", kind="agent", replicas=(one, two)),
                TargetRoutes(name="helper", kind="agent", replicas=(helper,)),
                TargetRoutes(name=ALIAS, kind="model", replicas=(one, two)),
            ),
            api_key_digests=(parse_api_key(KEY).digest,),
        )
        return node_pb2.ApplyRoutesRequest(table=table_to_proto(table))


def status(node: NodeProcess) -> node_pb2.NodeStatus:
    """The node's current status (the first message of its status stream)."""
    stream = node.stub().WatchStatus(node_pb2.WatchStatusRequest(controller_id="t"), timeout=10)
    try:
        return next(stream)
    finally:
        stream.cancel()


def requests_total(node: NodeProcess, agent: str) -> int:
    return next((a.requests_total for a in status(node).agents if a.name == agent), 0)


def ask(client: openai.OpenAI, model: str, *, stream: bool = False) -> tuple[str, str]:
    """(X-EdgeFleet-Node, the answer) of one short deterministic chat request."""
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=12,
        temperature=0,
        seed=1,
        stream=stream,
    )
    served = raw.headers["x-edgefleet-node"]
    parsed = raw.parse()
    if isinstance(parsed, openai.Stream):
        text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
    else:
        text = parsed.choices[0].message.content or ""
    return served, text


def refused(client: openai.OpenAI, model: str, *, stream: bool = False) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, model, stream=stream)
    return caught.value


def peer_stub(address: str, node_id: str) -> node_pb2_grpc.NodeServiceStub:
    """A stub that presents another node's certificate of this cluster (a peer)."""
    key = new_key()
    peer = run_ca().issue_node(load_csr(node_csr(key, "peer-x")), "peer-x", timedelta(hours=1))
    credentials = grpc.ssl_channel_credentials(run_ca().cert_pem, key_pem(key), peer.pem)
    channel = grpc.secure_channel(address, credentials, options=node_options(node_id))
    return node_pb2_grpc.NodeServiceStub(channel)


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    require_model()
    ports = free_port(), free_port()
    env = {ESCALATION_ENV: ESCALATION_SECRET}
    nodes = [
        start_node(
            unique_id(f"gw{i}"),
            tmp_path / f"n{i}",
            extra_args=["--gateway-listen", f"127.0.0.1:{port}"],
            env=env,
        )
        for i, port in enumerate(ports, 1)
    ]
    edge = Edge(nodes[0], nodes[1], *ports)
    try:
        edge.n1.stub().ApplyState(state(1, "assistant"), timeout=10)
        edge.n2.stub().ApplyState(state(1, "assistant", "helper"), timeout=10)
        wait_ready(edge.n1, 90)
        wait_ready(edge.n2, 90)
        for node in nodes:
            assert node.stub().ApplyRoutes(edge.table(1), timeout=10).generation == 1
        yield edge
    finally:
        for node in (edge.n1, edge.n2):
            node.close()


# -- the scenario -----------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.timeout(300)
def test_every_node_serves_a_gateway_that_keeps_working_without_its_peers_or_controller(
    edge: Edge,
) -> None:
    local_requests_never_leave_the_box(edge)
    requests_for_a_peer_go_over_mutual_tls(edge)
    a_peer_may_send_requests_but_never_command(edge)
    a_replica_reassigned_since_the_table_refuses_and_a_newer_table_fixes_it(edge)
    a_dead_peer_gives_a_clear_503_or_escalates(edge)
    a_restarted_node_routes_with_its_saved_table_without_a_controller(edge)


def local_requests_never_leave_the_box(edge: Edge) -> None:
    info = edge.n1.stub().GetInfo(node_pb2.GetInfoRequest(), timeout=5)
    assert info.gateway_url == f"http://127.0.0.1:{edge.gateway1}/v1"
    assert status(edge.n1).routes_generation == 1
    with edge.client() as client:
        listed = {m.id: m.model_extra for m in client.models.list()}
        assert listed["assistant"] == {"kind": "agent", "ready_replicas": 2}
        assert listed["helper"] == {"kind": "agent", "ready_replicas": 1}
        for stream in (False, True, False):
            served, text = ask(client, "assistant", stream=stream)
            assert served == edge.n1.node_id, edge.n1.log()
            assert text.strip()
        served, text = ask(client, ALIAS)
        assert (served, bool(text.strip())) == (edge.n1.node_id, True)
    # n2 runs the same agent and model and saw none of it.
    assert requests_total(edge.n1, "assistant") == 3
    assert requests_total(edge.n2, "assistant") == 0


def requests_for_a_peer_go_over_mutual_tls(edge: Edge) -> None:
    with edge.client() as client:
        for stream in (True, False):
            served, text = ask(client, "helper", stream=stream)
            assert served == edge.n2.node_id, edge.n1.log()
            assert text.strip()
    assert requests_total(edge.n2, "helper") == 2


def a_peer_may_send_requests_but_never_command(edge: Edge) -> None:
    peer = peer_stub(edge.n1.address, edge.n1.node_id)
    for call, request in (
        (peer.ApplyState, state(9, "assistant")),
        (peer.ApplyRoutes, edge.table(9)),
        (peer.GetInfo, node_pb2.GetInfoRequest()),
    ):
        with pytest.raises(grpc.RpcError) as denied:
            call(request, timeout=10)
        assert denied.value.code() == DENIED
        assert "node `peer-x`" in denied.value.details()
    # What a peer's gateway may do: send a request (here: an invalid one, refused for that).
    with pytest.raises(grpc.RpcError) as invalid:
        peer.InvokeAgentUnary(node_pb2.InvokeAgentRequest(), timeout=10)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status(edge.n1).generation == 1  # nothing the peer sent took effect


def a_replica_reassigned_since_the_table_refuses_and_a_newer_table_fixes_it(edge: Edge) -> None:
    stub1 = edge.n1.stub()
    assert stub1.ApplyRoutes(edge.table(1), timeout=10).generation == 1  # idempotent
    # n2's helper changes at generation 2; n1's table still says generation 1.
    edge.n2.stub().ApplyState(state(2, "assistant", "helper", helper_note=" Be kind."), timeout=10)
    wait_ready(edge.n2, 60)
    with edge.client() as client:
        stale = refused(client, "helper")
        assert stale.status_code == 503
        assert "reassigned to this node at generation 2" in str(stale.body), stale.body
        assert stub1.ApplyRoutes(edge.table(2, helper_at=2), timeout=10).generation == 2
        assert ask(client, "helper")[0] == edge.n2.node_id
    with pytest.raises(grpc.RpcError) as older:
        stub1.ApplyRoutes(edge.table(1), timeout=10)
    assert older.value.code() == PRECONDITION
    assert "older than the 2" in older.value.details()


def a_dead_peer_gives_a_clear_503_or_escalates(edge: Edge) -> None:
    edge.n2.kill()
    with edge.client() as client:
        for stream in (False, True):
            dead = refused(client, "helper", stream=stream)
            assert dead.status_code == 503, dead.body
            assert f"tried {edge.n2.node_id}" in str(dead.body), dead.body
        # The local replica still answers: the gateway never depended on n2.
        assert ask(client, "assistant")[0] == edge.n1.node_id
    with FakeOpenAIServer([CLOUD_MODEL], api_key=ESCALATION_SECRET) as cloud:
        escalation = EscalationEndpoint(
            base_url=f"{cloud.url}/v1", model=CLOUD_MODEL, api_key_env=ESCALATION_ENV
        )
        table = edge.table(3, helper_at=2, escalation=escalation)
        assert edge.n1.stub().ApplyRoutes(table, timeout=10).generation == 3
        with edge.client() as client:
            served, text = ask(client, "helper")
        assert (served, text) == ("escalation", reply_text("openai", CLOUD_MODEL))


def a_restarted_node_routes_with_its_saved_table_without_a_controller(edge: Edge) -> None:
    edge.n1.terminate()
    # No controller anywhere, n2 dead: n1 comes back with its state and its table.
    edge.n1 = start_node(
        edge.n1.node_id,
        edge.n1.data_dir,
        extra_args=["--gateway-listen", f"127.0.0.1:{edge.gateway1}"],
        env={ESCALATION_ENV: ESCALATION_SECRET},
    )
    wait_ready(edge.n1, 90)
    assert status(edge.n1).routes_generation == 3
    with edge.client() as client:
        assert {m.id for m in client.models.list()} == {"assistant", "helper", ALIAS}
        assert ask(client, "assistant", stream=True)[0] == edge.n1.node_id
        # helper: only on dead n2, and the saved table's escalation endpoint is gone.
        gone = refused(client, "helper")
        assert gone.status_code in (502, 504), gone.body
        assert gone.response.headers["x-edgefleet-node"] == "escalation"


# -- keys off loopback --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_node_gateway_off_loopback_serves_https_with_its_certificate_and_needs_a_key(
    tmp_path: Path,
) -> None:
    port = free_port("0.0.0.0")
    node = start_node(
        unique_id("gwkeys"), tmp_path / "node", extra_args=["--gateway-listen", f"0.0.0.0:{port}"]
    )
    with node:
        url = f"https://127.0.0.1:{port}/v1/models"
        verify = ssl.create_default_context(cadata=run_ca().cert_pem.decode())
        # The certificate is the node's own: it names the node, under `.invalid`.
        name = {"sni_hostname": node_server_name(node.node_id)}

        def get(key: str = "") -> httpx.Response:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            with httpx.Client(verify=verify, timeout=10) as client:
                return client.get(url, headers=headers, extensions=name)

        anonymous = get()
        assert anonymous.status_code == 401
        assert "needs an API key" in anonymous.json()["error"]["message"]
        early = get(KEY)
        assert early.status_code == 401
        assert "has not received a routing table" in early.json()["error"]["message"]
        table = RoutingTable(generation=1, api_key_digests=(parse_api_key(KEY).digest,))
        request = node_pb2.ApplyRoutesRequest(table=table_to_proto(table))
        node.stub().ApplyRoutes(request, timeout=10)
        assert get(KEY).status_code == 200
        wrong = get(KEY[:-1] + ("0" if KEY[-1] != "0" else "1"))  # well formed, not issued
        assert wrong.status_code == 401
        assert "not a key in force" in wrong.json()["error"]["message"]
        malformed = get(KEY + "x")
        assert malformed.status_code == 401
        assert "looks like efk_" in malformed.json()["error"]["message"]
        info = node.stub().GetInfo(node_pb2.GetInfoRequest(), timeout=5)
        assert info.gateway_url.startswith("https://")
        assert info.gateway_url.endswith(f":{port}/v1")
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets no answer from the HTTPS port
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
