"""The gateway's model path: the client's body goes to the node as the client sent it when
nothing in it must change, and re-encoded (with `model` set, `metadata` dropped) otherwise;
the runtime's answer comes back as it was sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from edgefleet.v1 import node_pb2
from edgefleet_dataplane.gateway import OpenAiGateway
from edgefleet_dataplane.http_server import Request, Response
from orchestrator.manifest.desired import DesiredState, ModelSpec
from orchestrator.routing_index import routing_index

ALIAS = "tiny"
ANSWER = b'{"object":"chat.completion","choices":[]}'
EVENTS = (b'data: {"choices":[]}\n\n', b"data: [DONE]\n\n")


@dataclass
class RecordingRouter:
    """Stands in for the router: records what the gateway sends, answers like a runtime."""

    content_type: str = "application/json"
    sent: list[bytes] = field(default_factory=list)
    whole: list[bool] = field(default_factory=list)

    def ready(self, target: str, kind: str) -> list[Any]:
        return []

    async def proxy_model(
        self,
        alias: str,
        body: bytes,
        timeout: float,
        request_id: str = "",
        served_by: list[str] | None = None,
        user: str = "",
        *,
        whole: bool = False,
    ) -> AsyncIterator[node_pb2.ProxyModelChunk]:
        self.sent.append(body)
        self.whole.append(whole)
        if served_by is not None:
            served_by.append("edge-1")
        if self.content_type == "text/event-stream":
            yield node_pb2.ProxyModelChunk(
                data=EVENTS[0], http_status=200, content_type=self.content_type
            )
            yield node_pb2.ProxyModelChunk(data=EVENTS[1])
            return
        yield node_pb2.ProxyModelChunk(
            data=ANSWER[:10], http_status=200, content_type=self.content_type
        )
        yield node_pb2.ProxyModelChunk(data=ANSWER[10:])


def ask(raw: bytes, router: RecordingRouter) -> tuple[Response, bytes]:
    deployment = DesiredState(
        type="single-device", name="d", models=(ModelSpec(alias=ALIAS, tasks=("chat",)),)
    )
    routes = routing_index([deployment])
    gateway = OpenAiGateway(router, lambda: routes)  # type: ignore[arg-type]

    async def scenario() -> tuple[Response, bytes]:
        response = await gateway.handle(Request("POST", "/v1/chat/completions", {}, raw))
        if response.stream is None:
            return response, response.body
        return response, b"".join([piece async for piece in response.stream])

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":4}',
        b'{ "messages":[{"role":"user","content":"\\u00e9t\\u00e9"}] ,"model":"tiny" }',
    ],
    ids=["compact", "escaped-and-reordered"],
)
def test_a_body_naming_the_alias_without_metadata_goes_as_the_client_sent_it(raw: bytes) -> None:
    router = RecordingRouter()
    response, body = ask(raw, router)
    assert router.sent == [raw]
    assert router.whole == [True]  # not streamed: a break before the end may be retried
    assert response.status == 200
    assert body == ANSWER
    assert ("x-edgefleet-node", "edge-1") in response.headers


def test_metadata_is_dropped_and_the_rest_kept() -> None:
    router = RecordingRouter()
    raw = b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "metadata": {}}'
    ask(raw, router)
    (sent,) = router.sent
    assert json.loads(sent) == {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def test_a_task_hint_request_is_sent_with_the_alias_it_was_routed_to() -> None:
    router = RecordingRouter()
    raw = b'{"messages": [{"role": "user", "content": "hi"}], "metadata": {"task": "chat"}}'
    response, _ = ask(raw, router)
    assert response.status == 200
    (sent,) = router.sent
    assert json.loads(sent) == {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}]}


def test_an_event_stream_is_relayed_as_the_runtime_sent_it() -> None:
    router = RecordingRouter(content_type="text/event-stream")
    raw = b'{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":true}'
    response, body = ask(raw, router)
    assert router.sent == [raw]
    assert router.whole == [False]  # streamed: what reaches the client is not taken back
    assert response.stream is not None
    assert ("content-type", "text/event-stream") in response.headers
    assert body == b"".join(EVENTS)
