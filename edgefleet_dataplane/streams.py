"""A replica's answer, chunk by chunk, turned into what the client gets.

An agent's chunks become one completion or a stream of OpenAI's server-sent
events; a model runtime's bytes are relayed as they are. A stream that breaks
after the client got part of it ends with an error event.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_dataplane.openai_wire import (
    SSE_DONE,
    chunk_body,
    sse_error,
    sse_event,
    usage_body,
)
from edgefleet_dataplane.route_error import RouteError

T = TypeVar("T")


async def first(stream: AsyncIterator[T]) -> T | None:
    """The first item, or None for an empty stream."""
    async for item in stream:
        return item
    return None


async def chain(head: T | None, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    """`head` (unless None), then the rest."""
    if head is not None:
        yield head
    async for item in rest:
        yield item


@dataclass(slots=True)
class AgentAnswer:
    """An agent's chunks gathered into one answer."""

    content: str = ""
    finish_reason: str = "stop"
    usage: common_pb2.Usage = field(default_factory=common_pb2.Usage)


async def gather(
    head: node_pb2.InvokeAgentChunk | None, rest: AsyncIterator[node_pb2.InvokeAgentChunk]
) -> AgentAnswer:
    """Every chunk of an agent's answer, as one."""
    answer = AgentAnswer()
    content: list[str] = []
    async for chunk in chain(head, rest):
        content.append(chunk.delta)
        if chunk.finish_reason:
            answer.finish_reason = chunk.finish_reason
        if chunk.HasField("usage"):
            answer.usage = chunk.usage
    answer.content = "".join(content)
    return answer


async def relay(
    head: node_pb2.ProxyModelChunk, rest: AsyncIterator[node_pb2.ProxyModelChunk]
) -> AsyncIterator[bytes]:
    """A model runtime's streamed answer, as it comes."""
    yield head.data
    try:
        async for chunk in rest:
            yield chunk.data
    except RouteError as error:
        # The stream broke after the client got part of it: say so in the stream.
        yield sse_error(str(error))


async def completion_events(
    completion_id: str,
    model: str,
    head: node_pb2.InvokeAgentChunk | None,
    rest: AsyncIterator[node_pb2.InvokeAgentChunk],
) -> AsyncIterator[bytes]:
    """An agent's answer as server-sent `chat.completion.chunk` events, then `[DONE]`."""
    created = int(time.time())

    def event(delta: dict[str, Any], finish: str | None, usage: Any = None) -> bytes:
        return sse_event(chunk_body(completion_id, model, created, delta, finish, usage))

    yield event({"role": "assistant", "content": ""}, None)
    finished = False
    try:
        async for chunk in chain(head, rest):
            if chunk.delta:
                yield event({"content": chunk.delta}, None)
            if chunk.finish_reason:
                usage = usage_body(chunk.usage) if chunk.HasField("usage") else None
                yield event({}, chunk.finish_reason, usage)
                finished = True
    except RouteError as error:
        yield sse_error(str(error))
        return
    if not finished:
        yield event({}, "stop")
    yield SSE_DONE
