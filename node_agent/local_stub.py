"""The node's own API called in process: how its gateway reaches the replicas on this box.

A request for an agent or model this node serves runs through the very handlers of
the node's gRPC servicer (admission, fencing, chunks, the mapping of the node's
errors to status codes), with no network hop. Their status codes reach the router
as `StatusError`s, which it treats exactly as a peer's gRPC errors, so the same
retry and escalation rules apply.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from edgefleet.v1 import node_pb2
from edgefleet_common.grpc_errors import StatusError

T = TypeVar("T")


class NodeHandlers(Protocol):
    """The servicer handlers the gateway calls (`node_agent.server.NodeService`'s)."""

    def InvokeAgent(
        self, request: node_pb2.InvokeAgentRequest, context: Any
    ) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
        """Run an agent request; its chunks."""
        ...

    def ProxyModel(
        self, request: node_pb2.ProxyModelRequest, context: Any
    ) -> AsyncIterator[node_pb2.ProxyModelChunk]:
        """Send an OpenAI request to a loaded model; the runtime's response in chunks."""
        ...


class InProcessContext:
    """What the node's handlers use of a servicer context, for a call made in process:
    the time left, and `abort`, which raises the status as a `StatusError`."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadline = clock() + timeout

    def time_remaining(self) -> float:
        """Seconds left before the caller's deadline."""
        return max(self._deadline - self._clock(), 0.0)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        """End the call with `code`: raised to the caller."""
        raise StatusError(code, details or code.name)


class LocalStub:
    """A `NodeStub` for the node the gateway runs on."""

    def __init__(self, node_id: str, handlers: NodeHandlers) -> None:
        self._node_id = node_id
        self._handlers = handlers

    def InvokeAgent(
        self, request: node_pb2.InvokeAgentRequest, timeout: float
    ) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
        """Run an agent request on this node; its chunks as they come."""
        return self._call(self._handlers.InvokeAgent, request, timeout)

    def ProxyModel(
        self, request: node_pb2.ProxyModelRequest, timeout: float
    ) -> AsyncIterator[node_pb2.ProxyModelChunk]:
        """Send an OpenAI request to a model loaded on this node."""
        return self._call(self._handlers.ProxyModel, request, timeout)

    async def _call(
        self,
        handler: Callable[[Any, InProcessContext], AsyncIterator[T]],
        request: Any,
        timeout: float,
    ) -> AsyncIterator[T]:
        context = InProcessContext(timeout)
        stream = handler(request, context)
        try:
            while True:
                # The deadline bounds each wait for the next chunk (never a yield: the
                # time the caller takes with a chunk is its own).
                try:
                    async with asyncio.timeout(context.time_remaining()):
                        chunk = await anext(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise StatusError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"the request's deadline passed on node `{self._node_id}`",
                    ) from None
                yield chunk
        finally:
            if isinstance(stream, AsyncGenerator):  # ends the handler's work at once
                await stream.aclose()
