"""A node's gateway in process: its own replicas first and in process, its errors, its keys,
its certificate and its channels to peers.

The node's model runs on its `openai` runtime against the OpenAI API stand-in
(tests/fakes/openai_api.py); the gateway's handler is called directly (the HTTP
server and peers over mutual TLS are tested with real processes in
tests/integration/test_node_gateway.py). A peer named by the routing table listens
nowhere, so a request that reached it would fail.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_common.grpc_errors import StatusError
from edgefleet_common.pki import (
    Credentials,
    key_pem,
    load_csr,
    new_key,
    node_csr,
    node_server_name,
)
from edgefleet_common.ports import free_port
from edgefleet_contract.api_keys import parse_api_key
from edgefleet_contract.desired import AgentWant, ModelWant, NodeDesired
from edgefleet_contract.routes_wire import table_to_proto
from edgefleet_contract.routing import AgentRoute, DeploymentRoutes, ModelRoute, RoutingIndex
from edgefleet_contract.routing_table import ReplicaRoute, RoutingTable, TargetRoutes
from edgefleet_dataplane.http_server import Request, Response
from node_agent.config import NodeConfig
from node_agent.daemon import Node
from node_agent.gateway_host import NodeGateway, gateway_tls
from node_agent.local_stub import LocalStub
from node_agent.node_directory import NodeReplicaDirectory, local_replica
from node_agent.node_trust import ServingCredentials, unjoined_credentials
from node_agent.peer_channels import PeerChannels
from node_agent.runtimes.base import Runtime, StateListener
from node_agent.runtimes.registry import create_runtime
from node_agent.server import NodeService
from tests import cluster_pki
from tests.fakes.openai_api import FakeOpenAIServer, reply_text

pytestmark = pytest.mark.timeout(30)

MODEL = ModelWant(alias="fake", runtime="openai", source="fake-model", tasks=("chat",))
HELPER = AgentWant(name="helper", model="fake")
ANSWER = reply_text("openai", "fake-model")
PEER = "n2"

K1 = "efk_0000aaaa_111111111111111111111111111111111111111111111111"
K2 = "efk_0000bbbb_222222222222222222222222222222222222222222222222"


def table(generation: int, *, keys: tuple[str, ...] = ()) -> RoutingTable:
    """The helper and the model on this node and on a peer that listens nowhere."""
    peer = f"127.0.0.1:{free_port()}"
    replicas = (
        ReplicaRoute(node_id="n1", address="127.0.0.1:1", generation=1),
        ReplicaRoute(node_id=PEER, address=peer, generation=1),
    )
    deployment = DeploymentRoutes(
        name="shop",
        distributed=True,
        strategy="round-robin",
        agents=(AgentRoute(name="helper"),),
        models=(ModelRoute(alias="fake", tasks=("chat",), primary=True),),
    )
    return RoutingTable(
        generation=generation,
        index=RoutingIndex(deployments=(deployment,)),
        targets=(
            TargetRoutes(name="helper", kind="agent", replicas=replicas),
            TargetRoutes(name="fake", kind="model", replicas=replicas),
        ),
        api_key_digests=tuple(parse_api_key(k).digest for k in keys),
    )


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(["fake-model"]) as running:
        yield running


Scenario = Callable[[Node, NodeService], Coroutine[Any, Any, None]]


def run(tmp_path: Path, server: FakeOpenAIServer, scenario: Scenario) -> None:
    def factory(name: str, listener: StateListener) -> Runtime:
        return create_runtime(name, listener, {"url": f"{server.url}/v1"})

    async def main() -> None:
        config = NodeConfig(node_id="n1", data_dir=tmp_path, metrics_port=None, advertise=False)
        node = Node(config, runtime_factory=factory)
        try:
            await node.apply(NodeDesired(generation=1, models=(MODEL,), agents=(HELPER,)))
            while local_replica(node, "helper", "agent") is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await scenario(node, NodeService(node))
        finally:
            await node.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def gateway(node: Node, service: NodeService, host: str = "127.0.0.1") -> NodeGateway:
    serving = ServingCredentials(unjoined_credentials("n1"), joined=False)
    return NodeGateway(
        "n1",
        host,
        lambda: node.routes.table,
        lambda: node.desired,
        functools.partial(local_replica, node),
        service,
        serving,
    )


def chat(model: str, *, stream: bool = False, key: str = "") -> Request:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return Request("POST", "/v1/chat/completions", headers, json.dumps(body).encode())


async def read(response: Response) -> bytes:
    if response.stream is None:
        return response.body
    return b"".join([piece async for piece in response.stream])


def header(response: Response, name: str) -> str:
    return next((v for k, v in response.headers if k == name), "")


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Context:
    """What the servicer's handlers use of a grpc.aio.ServicerContext (as in a real call)."""

    def time_remaining(self) -> float:
        return 10.0

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise Aborted(code, message)


# -- local first, in process ------------------------------------------------------------------


def test_the_own_replica_serves_in_process_and_the_peer_is_never_asked(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    async def scenario(node: Node, service: NodeService) -> None:
        await node.routes.apply(table(1))
        api = gateway(node, service)
        try:
            for stream in (False, True, False, True):  # round-robin would alternate
                response = await api.api.handle(chat("helper", stream=stream))
                body = await read(response)
                assert (response.status, header(response, "x-edgefleet-node")) == (200, "n1")
                assert ANSWER.split()[-1] in body.decode(), body
            proxied = await api.api.handle(chat("fake"))
            assert header(proxied, "x-edgefleet-node") == "n1"
            assert json.loads(proxied.body)["choices"][0]["message"]["content"] == ANSWER
            assert api.router.stats("helper", PEER) is None  # nothing ever went there
            models = json.loads((await api.api.handle(Request("GET", "/v1/models", {}, b""))).body)
            ready = {m["id"]: m["ready_replicas"] for m in models["data"]}
            assert ready == {"helper": 2, "fake": 2}
        finally:
            await api.close()

    run(tmp_path, server, scenario)


def test_when_the_own_replica_fails_the_peer_is_tried_and_the_503_names_both(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    async def scenario(node: Node, service: NodeService) -> None:
        await node.routes.apply(table(1))
        api = gateway(node, service)
        await asyncio.to_thread(server.stop)  # the local runtime is gone; the peer never was
        try:
            response = await api.api.handle(chat("fake"))
            problem = json.loads(response.body)["error"]
            assert response.status == 503, problem
            assert problem["code"] == "no_healthy_replica"
            assert "tried n1, n2" in problem["message"], problem
        finally:
            await api.close()

    run(tmp_path, server, scenario)


def test_without_a_table_the_node_routes_to_itself_alone(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    async def scenario(node: Node, service: NodeService) -> None:
        api = gateway(node, service)
        try:
            assert node.routes.generation == 0
            response = await api.api.handle(chat("helper"))
            assert (response.status, header(response, "x-edgefleet-node")) == (200, "n1")
            models = json.loads((await api.api.handle(Request("GET", "/v1/models", {}, b""))).body)
            owners = {m["id"]: (m["owned_by"], m["ready_replicas"]) for m in models["data"]}
            assert owners == {"helper": ("edgefleet/node/n1", 1), "fake": ("edgefleet/node/n1", 1)}
            unknown = await api.api.handle(chat("elsewhere"))
            assert unknown.status == 404
        finally:
            await api.close()

    run(tmp_path, server, scenario)


# -- the in-process stub's errors are the servicer's -----------------------------------------


async def local_code(stub: LocalStub, request: Any) -> tuple[grpc.StatusCode, str]:
    call = stub.InvokeAgent if isinstance(request, node_pb2.InvokeAgentRequest) else stub.ProxyModel
    with pytest.raises(StatusError) as refused:
        async for _ in call(request, 5.0):
            pass
    return refused.value.code, str(refused.value)


async def grpc_code(service: NodeService, request: Any) -> tuple[grpc.StatusCode, str]:
    call = (
        service.InvokeAgent
        if isinstance(request, node_pb2.InvokeAgentRequest)
        else service.ProxyModel
    )
    with pytest.raises(Aborted) as refused:
        async for _ in call(request, Context()):
            pass
    return refused.value.code, str(refused.value)


def test_the_in_process_stub_answers_with_the_servicers_codes_and_messages(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    hello = [common_pb2.ChatMessage(role="user", content="Hi")]
    body = b'{"messages": [{"role": "user", "content": "Hi"}]}'
    cases = {
        grpc.StatusCode.INVALID_ARGUMENT: node_pb2.InvokeAgentRequest(messages=hello),
        grpc.StatusCode.NOT_FOUND: node_pb2.InvokeAgentRequest(agent="nobody", messages=hello),
        grpc.StatusCode.FAILED_PRECONDITION: node_pb2.ProxyModelRequest(
            model="fake", body=body, generation=1
        ),
    }

    async def scenario(node: Node, service: NodeService) -> None:
        # The model is re-assigned at 2 (its tasks changed): requests routed at 1 are stale.
        moved = MODEL.model_copy(update={"tasks": ("chat", "summarize")})
        await node.apply(NodeDesired(generation=2, models=(moved,), agents=(HELPER,)))
        stub = LocalStub("n1", service)
        for code, request in cases.items():
            local = await local_code(stub, request)
            assert local == await grpc_code(service, request)
            assert local[0] == code, local
        stale = await local_code(stub, cases[grpc.StatusCode.FAILED_PRECONDITION])
        assert "reassigned to this node at generation 2" in stale[1]
        # The helper was not re-assigned: a request routed at 1 still runs, in chunks.
        invoke = node_pb2.InvokeAgentRequest(agent="helper", messages=hello, generation=1)
        chunks = [c async for c in stub.InvokeAgent(invoke, 10.0)]
        assert chunks[0].node_id == "n1"
        assert "".join(c.delta for c in chunks) == ANSWER
        assert chunks[-1].finish_reason == "stop"

    run(tmp_path, server, scenario)


def test_apply_routes_validates_refuses_older_tables_and_reports_the_generation(
    tmp_path: Path, server: FakeOpenAIServer
) -> None:
    async def scenario(node: Node, service: NodeService) -> None:
        with pytest.raises(Aborted) as invalid:
            await service.ApplyRoutes(node_pb2.ApplyRoutesRequest(), Context())
        assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "generation must be greater than 0" in str(invalid.value)
        request = node_pb2.ApplyRoutesRequest(table=table_to_proto(table(3)))
        assert (await service.ApplyRoutes(request, Context())).generation == 3
        assert (await service.ApplyRoutes(request, Context())).generation == 3  # idempotent
        assert (await node.status(1, heartbeat=False)).routes_generation == 3
        older = node_pb2.ApplyRoutesRequest(table=table_to_proto(table(2)))
        with pytest.raises(Aborted) as stale:
            await service.ApplyRoutes(older, Context())
        assert stale.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "older than the 3" in str(stale.value)

    run(tmp_path, server, scenario)


# -- API keys off loopback --------------------------------------------------------------------


def test_off_loopback_every_refused_key_says_why(tmp_path: Path, server: FakeOpenAIServer) -> None:
    async def scenario(node: Node, service: NodeService) -> None:
        api = gateway(node, service, host="0.0.0.0")  # never started: no port is opened
        assert api.secure

        async def refusal(key: str) -> str:
            response = await api.api.handle(chat("helper", key=key))
            assert response.status == 401, response.body
            return str(json.loads(response.body)["error"]["message"])

        try:
            assert "needs an API key" in await refusal("")
            assert "has not received a routing table" in await refusal(K1)
            await node.routes.apply(table(1))
            assert "lists no API key" in await refusal(K1)
            await node.routes.apply(table(2, keys=(K1,)))
            message = await refusal(K2)
            assert "not a key in force" in message
            assert K2 not in message
            accepted = await api.api.handle(chat("helper", key=K1))
            assert (accepted.status, header(accepted, "x-edgefleet-node")) == (200, "n1")
        finally:
            await api.close()

    run(tmp_path, server, scenario)


# -- the node's certificate, renewed --------------------------------------------------------------


def node_credentials(node_id: str) -> Credentials:
    key = new_key()
    issued = cluster_pki.test_ca().issue_node(
        load_csr(node_csr(key, node_id)), node_id, timedelta(hours=1)
    )
    return Credentials(key_pem(key), issued.pem, cluster_pki.test_ca().cert_pem)


async def served_certificate(context: ssl.SSLContext, ca_pem: bytes) -> bytes:
    """The certificate a TLS server with `context` presents, checked as a client would."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cadata=ca_pem.decode())
    try:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=node_server_name("n1")
        )
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return der
    finally:
        server.close()
        await server.wait_closed()


def test_the_gateway_serves_the_renewed_certificate_on_the_next_handshake(tmp_path: Path) -> None:
    first, renewed = node_credentials("n1"), node_credentials("n1")
    serving = ServingCredentials(first)
    context = gateway_tls(serving, tmp_path / "pki")

    async def scenario() -> None:
        assert await served_certificate(context, first.ca_pem) == der(first)
        serving.replace(renewed)
        assert await served_certificate(context, first.ca_pem) == der(renewed)

    asyncio.run(scenario())
    assert list((tmp_path / "pki").iterdir()) == []  # the key was on disk only to be read


def der(credentials: Credentials) -> bytes:
    return credentials.cert.public_bytes(serialization.Encoding.DER)


def test_one_channel_per_peer_replaced_when_it_moves_or_the_certificate_renews() -> None:
    serving = ServingCredentials(node_credentials("n1"))

    async def scenario() -> None:
        peers = PeerChannels(serving)
        try:
            first = peers.stub("n2", "127.0.0.1:1")
            assert peers.stub("n2", "127.0.0.1:1") is first
            assert peers.stub("n3", "127.0.0.1:1") is not first
            moved = peers.stub("n2", "127.0.0.1:2")
            assert moved is not first
            serving.replace(node_credentials("n1"))
            renewed = peers.stub("n2", "127.0.0.1:2")
            assert renewed is not moved
            peers.retain({"n3"})
            assert peers.stub("n2", "127.0.0.1:2") is not renewed
        finally:
            await peers.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_peer_that_refused_as_moved_is_left_out_until_a_newer_table() -> None:
    def replicas_table(generation: int) -> RoutingTable:
        replicas = tuple(
            ReplicaRoute(node_id=n, address=f"127.0.0.1:{port}", generation=3)
            for n, port in (("n2", 1), ("n3", 2))
        )
        targets = (TargetRoutes(name="helper", kind="agent", replicas=replicas),)
        return RoutingTable(generation=generation, targets=targets)

    current = [replicas_table(4)]
    serving = ServingCredentials(node_credentials("n1"))

    async def scenario() -> None:
        peers = PeerChannels(serving)
        try:
            no_local_stub: Any = None  # n1 runs nothing here: its stub is never asked for
            directory = NodeReplicaDirectory(
                "n1", lambda: current[0], lambda target, kind: None, no_local_stub, peers
            )
            assert [c.node_id for c in directory.ready("helper", "agent")] == ["n2", "n3"]
            directory.moved("helper", "agent", "n2")
            assert [c.node_id for c in directory.ready("helper", "agent")] == ["n3"]
            assert [c.node_id for c in directory.ready("helper", "model")] == []
            current[0] = replicas_table(5)  # a newer table: the controller knows better
            assert [c.node_id for c in directory.ready("helper", "agent")] == ["n2", "n3"]
        finally:
            await peers.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))
