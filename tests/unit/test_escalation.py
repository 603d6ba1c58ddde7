"""Escalation: when the gateway sends a request to the deployment's cloud endpoint, and when
it must not.

The real router and gateway run in-process over stand-in nodes (scripted gRPC streams);
the escalation endpoint is a stand-in OpenAI-compatible server on 127.0.0.1 that
requires an API key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_common.logs import JsonFormatter
from edgefleet_common.ports import free_port
from edgefleet_contract.desired import AgentWant, ModelWant, NodeDesired
from edgefleet_dataplane.circuit import FAILURES_TO_OPEN
from edgefleet_dataplane.escalation import Escalator, endpoint_host, escalated_body
from edgefleet_dataplane.gateway import OpenAiGateway
from edgefleet_dataplane.http_server import Request, Response
from edgefleet_dataplane.router import Router
from orchestrator.fleet.replica_directory import FleetReplicaDirectory
from orchestrator.manifest.desired import AgentSpec, DesiredState, EscalationSpec, ModelSpec
from orchestrator.routing_index import routing_index
from tests.fakes.openai_api import FakeOpenAIServer, reply_text

KEY = "sk-escalation-test-5f2c9a"
KEY_ENV = "EDGE_TEST_ESCALATION_KEY"
CLOUD_MODEL = "gpt-4o-mini"
AGENT = "helper"
ALIAS = "tiny"
INSTRUCTIONS = "Answer in one short sentence."
NODES = ("edge-1", "edge-2")

Script = Callable[[Any, float], AsyncIterator[Any]]
"""What a stand-in node does with one request: yields chunks or raises."""


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def refuse(code: grpc.StatusCode) -> Script:
    async def script(request: Any, timeout: float) -> AsyncIterator[Any]:
        raise rpc_error(code, f"refused with {code.name}")
        yield  # pragma: no cover

    return script


def answer(node: str) -> Script:
    async def script(request: Any, timeout: float) -> AsyncIterator[Any]:
        yield node_pb2.InvokeAgentChunk(delta="edge answer", node_id=node)
        yield node_pb2.InvokeAgentChunk(finish_reason="stop", usage=common_pb2.Usage())

    return script


def break_after(first: node_pb2.InvokeAgentChunk) -> Script:
    async def script(request: Any, timeout: float) -> AsyncIterator[Any]:
        yield first
        raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")

    return script


@dataclass
class FakeStub:
    script: Script
    calls: int = 0

    def InvokeAgent(self, request: Any, timeout: float) -> AsyncIterator[Any]:
        self.calls += 1
        return self.script(request, timeout)

    def ProxyModel(self, request: Any, timeout: float) -> AsyncIterator[Any]:
        self.calls += 1
        return self.script(request, timeout)


@dataclass
class FakeLink:
    stub: FakeStub
    health: str = "ready"
    status: node_pb2.NodeStatus = field(
        default_factory=lambda: node_pb2.NodeStatus(
            agents=[common_pb2.AgentStatus(name=AGENT, state=common_pb2.AGENT_STATE_READY)],
            models=[common_pb2.ModelStatus(alias=ALIAS, state=common_pb2.MODEL_STATE_READY)],
        )
    )


@dataclass
class FakeEvents:
    recorded: list[tuple[str, str, str, str]] = field(default_factory=list)

    def record(self, severity: str, reason: str, obj: str, message: str, **_: Any) -> None:
        self.recorded.append((severity, reason, obj, message))


class Setup:
    """A gateway over stand-in nodes, with or without an escalation endpoint."""

    def __init__(
        self,
        escalation: EscalationSpec | None,
        nodes: dict[str, Script] | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.links = {node: FakeLink(FakeStub(script)) for node, script in (nodes or {}).items()}
        assignment = {
            node: NodeDesired(
                generation=1,
                models=(ModelWant(alias=ALIAS),),
                agents=(AgentWant(name=AGENT, model=ALIAS),),
            )
            for node in NODES
        }
        deployment = DesiredState(
            type="distributed-edge",
            name="shop",
            models=(ModelSpec(alias=ALIAS),),
            agents=(
                AgentSpec(name=AGENT, model=ALIAS, tools=("time",), instructions=INSTRUCTIONS),
            ),
            escalation=escalation,
        )
        fleet: Any = self
        routes = routing_index([deployment])
        self.router = Router(FleetReplicaDirectory(fleet, lambda: assignment), lambda: routes)
        self.events = FakeEvents()
        events: Any = self.events
        self.escalator = Escalator(events, environ={KEY_ENV: KEY} if environ is None else environ)
        self.gateway = OpenAiGateway(self.router, lambda: routes, self.escalator)

    def get(self, node_id: str) -> FakeLink | None:
        return self.links.get(node_id)

    async def post(self, body: dict[str, Any]) -> tuple[Response, bytes]:
        request = Request("POST", "/v1/chat/completions", {}, json.dumps(body).encode())
        response = await self.gateway.handle(request)
        if response.stream is None:
            return response, response.body
        return response, b"".join([piece async for piece in response.stream])

    def run(self, body: dict[str, Any]) -> tuple[Response, bytes]:
        async def scenario() -> tuple[Response, bytes]:
            try:
                return await self.post(body)
            finally:
                await self.escalator.close()

        return asyncio.run(scenario())


def ask(model: str = AGENT, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record with its fields, as the controller's JSON log writes them."""
    return "\n".join(JsonFormatter().format(record) for record in caplog.records)


def header(response: Response, name: str) -> str | None:
    return next((v for k, v in response.headers if k == name), None)


@pytest.fixture
def cloud() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer([CLOUD_MODEL], api_key=KEY) as server:
        yield server


def spec(base_url: str, timeout_s: float = 10.0) -> EscalationSpec:
    return EscalationSpec(
        base_url=f"{base_url}/v1", model=CLOUD_MODEL, api_key_env=KEY_ENV, timeout_s=timeout_s
    )


# -- when to escalate ---------------------------------------------------------------------


def test_no_ready_replica_escalates_with_bearer_key_and_agent_instructions(
    cloud: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    setup = Setup(spec(cloud.url))
    response, body = setup.run(ask(tool_choice="auto", metadata={"task": "x"}))
    assert response.status == 200, body
    assert header(response, "x-edgefleet-node") == "escalation"
    assert header(response, "x-edgefleet-escalated") == "no-ready-replica"
    reply = json.loads(body)
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == reply_text("openai", CLOUD_MODEL)
    (sent,) = cloud.requests
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json() == {
        "model": CLOUD_MODEL,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": "hi"},
        ],
    }
    assert setup.escalator.escalated == {f"agent/{AGENT}": 1}
    assert [(e[1], e[2]) for e in setup.events.recorded] == [("Escalating", f"agent/{AGENT}")]
    (line,) = [r for r in caplog.records if r.getMessage() == "request escalated"]
    assert line.levelno == logging.INFO
    fields = (getattr(line, "target", None), getattr(line, "reason", None))
    assert fields == (f"agent/{AGENT}", "no-ready-replica")
    assert KEY not in logged(caplog)
    assert KEY not in repr(setup.events.recorded)


def test_a_model_alias_escalates_with_its_model_replaced(cloud: FakeOpenAIServer) -> None:
    response, body = Setup(spec(cloud.url)).run(ask(ALIAS, max_tokens=5))
    assert response.status == 200, body
    assert header(response, "x-edgefleet-node") == "escalation"
    assert cloud.requests[0].json() == {
        "model": CLOUD_MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
    }


def test_a_stream_is_relayed_as_server_sent_events(cloud: FakeOpenAIServer) -> None:
    response, body = Setup(spec(cloud.url)).run(ask(stream=True))
    assert response.status == 200
    assert header(response, "content-type") == "text/event-stream"
    events = [line.removeprefix(b"data: ") for line in body.split(b"\n\n") if line]
    assert events[-1] == b"[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == reply_text("openai", CLOUD_MODEL)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.UNAVAILABLE, "replicas-failed"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "queues-full"),
        (grpc.StatusCode.FAILED_PRECONDITION, "replicas-failed"),
    ],
)
def test_every_replica_refusing_before_an_answer_escalates(
    cloud: FakeOpenAIServer, code: grpc.StatusCode, reason: str
) -> None:
    setup = Setup(spec(cloud.url), {node: refuse(code) for node in NODES})
    response, body = setup.run(ask())
    assert response.status == 200, body
    assert header(response, "x-edgefleet-escalated") == reason
    assert [link.stub.calls for link in setup.links.values()] == [1, 1]


def test_every_circuit_open_escalates_without_calling_a_node(cloud: FakeOpenAIServer) -> None:
    setup = Setup(spec(cloud.url), {node: answer(node) for node in NODES})
    for node in NODES:
        for _ in range(FAILURES_TO_OPEN):
            setup.router.balancer.failed(AGENT, node)
    response, _ = setup.run(ask())
    assert header(response, "x-edgefleet-escalated") == "circuits-open"
    assert [link.stub.calls for link in setup.links.values()] == [0, 0]


def test_an_edge_answer_is_not_escalated_and_ends_an_escalation(cloud: FakeOpenAIServer) -> None:
    setup = Setup(spec(cloud.url), {"edge-1": answer("edge-1")})

    async def scenario() -> None:
        try:
            setup.links["edge-1"].health = "not-ready"
            escalated, _ = await setup.post(ask())
            assert header(escalated, "x-edgefleet-node") == "escalation"
            setup.links["edge-1"].health = "ready"
            served, body = await setup.post(ask())
            assert header(served, "x-edgefleet-node") == "edge-1"
            assert header(served, "x-edgefleet-escalated") is None
            assert json.loads(body)["choices"][0]["message"]["content"] == "edge answer"
        finally:
            await setup.escalator.close()

    asyncio.run(scenario())
    assert len(cloud.requests) == 1
    assert [e[1] for e in setup.events.recorded] == ["Escalating", "EscalationEnded"]
    assert "after 1 escalated request" in setup.events.recorded[1][3]


# -- when not to escalate -----------------------------------------------------------------


def test_without_escalation_no_ready_replica_stays_503_with_retry_after() -> None:
    response, body = Setup(None).run(ask())
    assert response.status == 503
    assert header(response, "retry-after") == "1"
    assert json.loads(body)["error"]["code"] == "no_healthy_replica"
    assert header(response, "x-edgefleet-escalated") is None


def test_without_escalation_full_queues_everywhere_are_429_with_retry_after() -> None:
    setup = Setup(None, {node: refuse(grpc.StatusCode.RESOURCE_EXHAUSTED) for node in NODES})
    response, body = setup.run(ask())
    assert response.status == 429, body
    assert header(response, "retry-after") == "1"
    error = json.loads(body)["error"]
    assert error["code"] == "queue_full"
    assert "full queue" in error["message"]


@pytest.mark.parametrize(
    ("request_body", "status"),
    [
        (ask("no-such-agent"), 404),
        (ask(messages=[]), 400),
        ({"model": AGENT, "messages": [{"role": "wizard", "content": "hi"}]}, 400),
        (ask(max_tokens=0), 400),
    ],
)
def test_a_bad_request_is_an_error_not_an_escalation(
    cloud: FakeOpenAIServer, request_body: dict[str, Any], status: int
) -> None:
    response, _ = Setup(spec(cloud.url)).run(request_body)
    assert response.status == status
    assert cloud.requests == []


def test_a_request_the_node_rejects_as_invalid_is_not_escalated(cloud: FakeOpenAIServer) -> None:
    setup = Setup(spec(cloud.url), {"edge-1": refuse(grpc.StatusCode.INVALID_ARGUMENT)})
    response, _ = setup.run(ask())
    assert response.status == 400
    assert cloud.requests == []


PARTIAL = node_pb2.InvokeAgentChunk(delta="partial", node_id="edge-1")
TOOL_STARTED = node_pb2.InvokeAgentChunk(
    tool=node_pb2.ToolEvent(
        phase=node_pb2.ToolEvent.PHASE_STARTED, tool="email", side_effects=True
    ),
    node_id="edge-1",
)


@pytest.mark.parametrize(
    ("first", "stream"),
    [(PARTIAL, True), (TOOL_STARTED, True), (TOOL_STARTED, False)],
    ids=["streamed-answer-started", "streamed-tool-started", "whole-tool-started"],
)
def test_an_unknown_outcome_is_not_escalated(
    cloud: FakeOpenAIServer, first: node_pb2.InvokeAgentChunk, stream: bool
) -> None:
    setup = Setup(spec(cloud.url), {"edge-1": break_after(first)})
    response, body = setup.run(ask(stream=stream))
    assert header(response, "x-edgefleet-escalated") is None
    assert b"outcome is unknown" in body
    assert cloud.requests == []
    assert setup.escalator.escalated == {}


def test_a_whole_answer_that_broke_off_before_any_tool_escalates(
    cloud: FakeOpenAIServer,
) -> None:
    # The client would have had nothing of it yet, and nothing ran: safe to send elsewhere.
    setup = Setup(spec(cloud.url), {"edge-1": break_after(PARTIAL)})
    response, body = setup.run(ask(stream=False))
    assert header(response, "x-edgefleet-escalated") == "replicas-failed"
    assert b"partial" not in body
    assert len(cloud.requests) == 1


# -- the escalation endpoint failing ------------------------------------------------------


def test_a_rejected_key_is_a_502_naming_the_host_not_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer([CLOUD_MODEL], api_key="sk-the-right-one") as cloud:
        host = endpoint_host(cloud.url)
        response, body = Setup(spec(cloud.url)).run(ask())
    assert response.status == 502
    error = json.loads(body)["error"]
    assert error["code"] == "escalation_failed"
    assert host in error["message"]
    assert "401" in error["message"]
    assert header(response, "x-edgefleet-node") == "escalation"
    assert KEY not in body.decode()
    assert KEY not in logged(caplog)


def test_a_missing_key_variable_is_a_502_naming_the_variable() -> None:
    with FakeOpenAIServer([CLOUD_MODEL], api_key=KEY) as cloud:
        response, body = Setup(spec(cloud.url), environ={}).run(ask())
        assert cloud.requests == []
    assert response.status == 502
    error = json.loads(body)["error"]
    assert error["code"] == "escalation_key_missing"
    assert KEY_ENV in error["message"]


def test_an_unreachable_endpoint_is_a_502() -> None:
    port = free_port()
    response, body = Setup(spec(f"http://127.0.0.1:{port}")).run(ask())
    assert response.status == 502
    error = json.loads(body)["error"]
    assert error["code"] == "escalation_unreachable"
    assert f"127.0.0.1:{port}" in error["message"]
    assert "no ready replica" in error["message"]


def test_an_endpoint_that_does_not_answer_in_time_is_a_504() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        response, body = Setup(spec(f"http://127.0.0.1:{port}", timeout_s=0.2)).run(ask())
    assert response.status == 504
    assert json.loads(body)["error"]["code"] == "escalation_timeout"


# -- the request sent -------------------------------------------------------------------


def test_the_escalated_body_keeps_the_request_and_drops_edge_only_fields() -> None:
    body = ask(stream=True, temperature=0.2, tools=[{"type": "function"}], metadata={"a": "b"})
    agent = escalated_body(body, "big", "agent", "Be kind.")
    assert agent == {
        "model": "big",
        "messages": [{"role": "system", "content": "Be kind."}, *body["messages"]],
        "stream": True,
        "temperature": 0.2,
    }
    model = escalated_body(body, "big", "model")
    assert model["tools"] == [{"type": "function"}]
    assert model["messages"] == body["messages"]
    assert "metadata" not in model
    assert body["model"] == AGENT, "the original request is left alone"
