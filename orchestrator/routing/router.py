"""Sending a request to a replica of an agent or model, and retrying on another.

A request is retried on a different replica only while that is safe: nothing
has reached the caller yet, and (for agents) no tool with side effects has
started. Otherwise the caller gets a clear error saying the outcome is unknown.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from edgefleet.v1 import node_pb2
from node_agent.desired import NodeDesired
from orchestrator.fleet.fleet import Fleet
from orchestrator.routing.replicas import Candidate, TargetKind, candidates

log = logging.getLogger(__name__)

RETRIABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,  # stale generation: the replica moved
        grpc.StatusCode.NOT_FOUND,  # the node no longer hosts it
        grpc.StatusCode.CANCELLED,  # the connection to the node broke
    }
)


class RouteError(Exception):
    """No replica could serve the request; `code` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class ReplicaStats:
    """What the router measured of one replica."""

    in_flight: int = 0
    latency_ewma_ms: float = 0.0
    circuit: str = "closed"


class Router:
    """Picks replicas for requests and retries safely on another one."""

    def __init__(self, fleet: Fleet, assignment: Callable[[], Mapping[str, NodeDesired]]) -> None:
        self._fleet = fleet
        self._assignment = assignment
        self._stats: dict[tuple[str, str], ReplicaStats] = {}

    def stats(self, target: str, node: str) -> ReplicaStats | None:
        """The router's figures for one replica, if it has served anything."""
        return self._stats.get((target, node))

    def order(self, target: str, kind: TargetKind) -> list[Candidate]:
        """Ready replicas, the least busy first."""
        found = candidates(self._fleet, self._assignment(), target, kind)

        def busy(candidate: Candidate) -> tuple[int, float, str]:
            stats = self._stats.get((target, candidate.node_id)) or ReplicaStats()
            return (stats.in_flight, stats.latency_ewma_ms, candidate.node_id)

        return sorted(found, key=busy)

    async def invoke_agent(
        self, request: node_pb2.InvokeAgentRequest, timeout: float
    ) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
        """Run an agent request on a ready replica; yields its chunks."""
        request.request_id = request.request_id or uuid.uuid4().hex

        def call(stub: Any, candidate: Candidate, remaining: float) -> Any:
            attempt = node_pb2.InvokeAgentRequest()
            attempt.CopyFrom(request)
            attempt.generation = candidate.generation
            return stub.InvokeAgent(attempt, timeout=remaining)

        async for chunk in self._route(request.agent, "agent", call, timeout):
            yield chunk

    async def proxy_model(
        self,
        alias: str,
        body: bytes,
        timeout: float,
        request_id: str = "",
        served_by: list[str] | None = None,
    ) -> AsyncIterator[node_pb2.ProxyModelChunk]:
        """Send an OpenAI chat-completions body to a node that has `alias` loaded; yields
        the runtime's response (status and content type on the first chunk). The serving
        node's id is appended to `served_by` before the first chunk."""
        request = node_pb2.ProxyModelRequest(
            model=alias, body=body, request_id=request_id or uuid.uuid4().hex
        )

        def call(stub: Any, candidate: Candidate, remaining: float) -> Any:
            return stub.ProxyModel(request, timeout=remaining)

        async for chunk in self._route(alias, "model", call, timeout, served_by):
            yield chunk

    async def _route(
        self,
        target: str,
        kind: TargetKind,
        call: Callable[[Any, Candidate, float], Any],
        timeout: float,
        served_by: list[str] | None = None,
    ) -> AsyncIterator[Any]:
        """Try the ready replicas in order until one answers; retry on another only while
        nothing reached the caller and no tool with side effects has started."""
        deadline = time.monotonic() + timeout
        tried: list[str] = []
        last_error = ""
        what = f"agent `{target}`" if kind == "agent" else f"model `{target}`"
        for candidate in self.order(target, kind):
            link = self._fleet.get(candidate.node_id)
            if link is None or link.stub is None:
                continue
            tried.append(candidate.node_id)
            stats = self._stats.setdefault((target, candidate.node_id), ReplicaStats())
            sent_any = side_effects = False
            stats.in_flight += 1
            started = time.monotonic()
            try:
                stream = call(link.stub, candidate, max(deadline - time.monotonic(), 0.001))
                async for chunk in stream:
                    if not sent_any:
                        _observe(stats, started)
                        if served_by is not None:
                            served_by.append(candidate.node_id)
                    sent_any = True
                    tool = getattr(chunk, "tool", None)
                    if tool is not None and chunk.HasField("tool") and tool.side_effects:
                        side_effects = True
                    yield chunk
                return
            except grpc.aio.AioRpcError as exc:
                last_error = f"{candidate.node_id}: {exc.details() or exc.code().name}"
                if sent_any or side_effects:
                    raise RouteError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"{what} broke off on {candidate.node_id} after it had started "
                        f"answering ({exc.details()}); the outcome is unknown, so the "
                        "request was not retried",
                    ) from exc
                if exc.code() not in RETRIABLE:
                    raise RouteError(exc.code(), exc.details() or exc.code().name) from exc
                log.info(
                    "retrying on another replica",
                    extra={"target": target, "failed": candidate.node_id},
                )
            finally:
                stats.in_flight -= 1
            if time.monotonic() >= deadline:
                break
        if not tried:
            raise RouteError(grpc.StatusCode.UNAVAILABLE, f"no ready replica of {what}")
        raise RouteError(
            grpc.StatusCode.UNAVAILABLE,
            f"every replica of {what} failed (tried {', '.join(tried)}; last: {last_error})",
        )


def _observe(stats: ReplicaStats, started: float) -> None:
    sample = (time.monotonic() - started) * 1000
    stats.latency_ewma_ms = (
        sample if not stats.latency_ewma_ms else stats.latency_ewma_ms * 0.7 + sample * 0.3
    )
