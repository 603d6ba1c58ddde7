"""The node API over gRPC: requests in, the node's answers out, errors as status codes.

Every handler maps the node's exception tree to gRPC status codes in one place
(`_STATUS`); anything unexpected is logged with its traceback and answered with
INTERNAL, so a bad request never takes the daemon down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc

from edgefleet.v1 import common_pb2, node_pb2, node_pb2_grpc
from edgefleet_common.grpc_errors import Ctx, ErrorMapping
from edgefleet_contract.errors import InvalidMessage
from edgefleet_contract.routes_wire import table_from_proto
from edgefleet_contract.wire import MODEL_STATES, desired_from_proto, item_results
from node_agent.agent_wire import messages_from_proto, tool_event
from node_agent.agents.run_events import RunFinished, TextDelta
from node_agent.agents.run_options import RunOptions
from node_agent.blob_service import BlobUnavailable, fetch_blob
from node_agent.daemon import Node
from node_agent.errors import (
    InvalidRequest,
    ModelLoadError,
    NodeError,
    NodeStopping,
    NotFound,
    QueueFull,
    RuntimeUnavailable,
    StaleGeneration,
    StaleLeaderTerm,
    ToolNotAllowed,
)
from node_agent.models import ModelSlot

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300.0
"""Deadline for a request whose caller set none."""

_STATUS: Mapping[type[NodeError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    StaleGeneration: grpc.StatusCode.FAILED_PRECONDITION,
    StaleLeaderTerm: grpc.StatusCode.FAILED_PRECONDITION,
    QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RuntimeUnavailable: grpc.StatusCode.UNAVAILABLE,
    NodeStopping: grpc.StatusCode.UNAVAILABLE,
    ModelLoadError: grpc.StatusCode.UNAVAILABLE,
    ToolNotAllowed: grpc.StatusCode.PERMISSION_DENIED,
    BlobUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code(error: NodeError) -> grpc.StatusCode:
    """The gRPC status code of a node error (its nearest mapped base class)."""
    for cls in type(error).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return grpc.StatusCode.INTERNAL


def _classify(error: Exception) -> tuple[grpc.StatusCode, str] | None:
    if isinstance(error, InvalidMessage):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, NodeError):
        return status_code(error), str(error)
    return None


_errors = ErrorMapping(_classify, "on the node", log)
unary = _errors.unary
streaming = _errors.streaming


def _timeout(context: Ctx) -> float:
    remaining = context.time_remaining()
    return DEFAULT_TIMEOUT_S if remaining is None else max(remaining, 0.0)


class NodeService(node_pb2_grpc.NodeServiceServicer):
    """The NodeService RPCs of one node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    @unary
    async def GetInfo(self, request: node_pb2.GetInfoRequest, context: Ctx) -> node_pb2.NodeInfo:
        return await self.node.info()

    @unary
    async def ApplyState(
        self, request: node_pb2.ApplyStateRequest, context: Ctx
    ) -> node_pb2.ApplyStateResponse:
        # The leader term before anything else: an older leader's push changes nothing.
        await self.node.leader_terms.admit(
            request.leader_term, request.controller_id, f"generation {request.generation}"
        )
        changes = await self.node.apply(desired_from_proto(request))
        return node_pb2.ApplyStateResponse(
            generation=self.node.desired.generation, results=item_results(changes)
        )

    @unary
    async def ApplyRoutes(
        self, request: node_pb2.ApplyRoutesRequest, context: Ctx
    ) -> node_pb2.ApplyRoutesResponse:
        table = request.table
        await self.node.leader_terms.admit(
            request.leader_term, table.controller_id, f"routing table {table.generation}"
        )
        await self.node.routes.apply(table_from_proto(table))
        return node_pb2.ApplyRoutesResponse(generation=self.node.routes.generation)

    @streaming
    async def WatchStatus(
        self, request: node_pb2.WatchStatusRequest, context: Ctx
    ) -> AsyncIterator[node_pb2.NodeStatus]:
        await self.node.leader_terms.observe(request.leader_term, request.controller_id)
        changes = self.node.changes
        interval = self.node.config.heartbeat_interval_s
        seen, seq = changes.version, 1
        yield await self.node.status(seq, heartbeat=False)
        while True:
            changed = await changes.wait(seen, interval)
            self._check_running()
            if changed:
                # A load or an apply changes many things at once: send them together.
                await asyncio.sleep(0.02)
            seen = changes.version
            seq += 1
            yield await self.node.status(seq, heartbeat=not changed)

    @streaming
    async def InvokeAgent(
        self, request: node_pb2.InvokeAgentRequest, context: Ctx
    ) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
        if not request.agent:
            raise InvalidRequest("`agent` is required")
        self.node.fences.check("agent", request.agent, request.generation)
        messages = messages_from_proto(request.messages)
        options = RunOptions.from_proto(request.options)
        first = True
        events = self.node.agents.invoke(request.agent, messages, options, _timeout(context))
        async for event in events:
            chunk = node_pb2.InvokeAgentChunk()
            if first:
                chunk.node_id, first = self.node.config.node_id, False
            if isinstance(event, TextDelta):
                chunk.delta = event.text
            elif isinstance(event, RunFinished):
                chunk.finish_reason = event.finish_reason
                chunk.usage.CopyFrom(
                    common_pb2.Usage(
                        prompt_tokens=event.prompt_tokens or 0,
                        completion_tokens=event.completion_tokens or 0,
                    )
                )
            else:
                tool = tool_event(event)
                if tool is None:
                    continue
                chunk.tool.CopyFrom(tool)
            yield chunk

    @unary
    async def InvokeAgentUnary(
        self, request: node_pb2.InvokeAgentRequest, context: Ctx
    ) -> node_pb2.InvokeAgentResponse:
        response = node_pb2.InvokeAgentResponse(node_id=self.node.config.node_id)
        parts: list[str] = []
        async for chunk in self.InvokeAgent(request, context):
            parts.append(chunk.delta)
            if chunk.HasField("tool"):
                response.tools.append(chunk.tool)
            if chunk.finish_reason:
                response.finish_reason = chunk.finish_reason
                response.usage.CopyFrom(chunk.usage)
        response.content = "".join(parts)
        return response

    @streaming
    async def ProxyModel(
        self, request: node_pb2.ProxyModelRequest, context: Ctx
    ) -> AsyncIterator[node_pb2.ProxyModelChunk]:
        if not request.model:
            raise InvalidRequest("`model` is required")
        self.node.fences.check("model", request.model, request.generation)
        if self.node.models.slot(request.model) is None:
            # Checked before admission, which keeps figures (and metrics) per name it sees.
            raise NotFound(f"model `{request.model}` is not on this node")
        async for part in self.node.proxy.forward(request.model, request.body, _timeout(context)):
            yield node_pb2.ProxyModelChunk(
                http_status=part.http_status, content_type=part.content_type, data=part.data
            )

    @streaming
    async def LoadModel(
        self, request: node_pb2.LoadModelRequest, context: Ctx
    ) -> AsyncIterator[node_pb2.ModelProgress]:
        before = self.node.models.slot(request.alias)
        running = before.task if before is not None else None
        slot = await self.node.models.load_now(request.alias)
        started = slot.task is not None and slot.task is not running
        failures = slot.failures

        def settled(now: ModelSlot) -> bool:
            # A load this call started ends with its own outcome. A model that failed and
            # waits to retry has ended already: its next attempt is not this call's to await.
            if now.state == "ready":
                return now.task is None
            return now.state == "failed" and (
                now.task is None or not started or now.failures > failures
            )

        async for progress in self._progress(request.alias, settled):
            yield progress

    @streaming
    async def UnloadModel(
        self, request: node_pb2.UnloadModelRequest, context: Ctx
    ) -> AsyncIterator[node_pb2.ModelProgress]:
        unloading = asyncio.create_task(self.node.models.unload_now(request.alias))
        try:
            async for progress in self._progress(
                request.alias,
                lambda now: now.state in ("pending", "failed") and now.task is None,
                work=unloading,
            ):
                yield progress
        finally:
            if not unloading.done():
                unloading.cancel()
        await unloading

    @streaming
    async def FetchBlob(
        self, request: node_pb2.FetchBlobRequest, context: Ctx
    ) -> AsyncIterator[node_pb2.BlobChunk]:
        async for chunk in fetch_blob(self.node, request):
            yield chunk

    def _check_running(self) -> None:
        # Streams that follow the node end when it stops, so that a clean shutdown waits
        # only for requests in flight, not for its watchers' grace period.
        if self.node.stopping:
            raise NodeStopping(f"edge-node `{self.node.config.node_id}` is shutting down")

    async def _progress(
        self,
        alias: str,
        settled: Callable[[ModelSlot], bool],
        work: asyncio.Task[Any] | None = None,
    ) -> AsyncIterator[node_pb2.ModelProgress]:
        """The model's progress as it changes, until `settled` says it is done."""
        changes = self.node.changes
        seen = -1
        last: tuple[str, float, str] | None = None
        while True:
            await changes.wait(seen, self.node.config.heartbeat_interval_s)
            self._check_running()
            if work is not None and work.done() and work.exception() is not None:
                await work  # raises the reason the work could not be done
            seen = changes.version
            slot = self.node.models.slot(alias)
            if slot is None:
                raise NotFound(f"model `{alias}` was removed from this node's desired state")
            now = (slot.state, slot.progress, slot.reason)
            if now != last:
                last = now
                yield node_pb2.ModelProgress(
                    alias=alias,
                    state=MODEL_STATES[slot.state],
                    progress=slot.progress,
                    message=slot.reason,
                )
            if settled(slot):
                return
