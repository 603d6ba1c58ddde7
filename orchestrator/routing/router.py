"""Sending a request to a replica of an agent or model, and retrying on another.

A request is retried on a different replica only while that is safe: nothing
has reached the caller yet, and (for agents) no tool with side effects has
started. Otherwise the caller gets a clear error saying the outcome is unknown.
A failure that left nothing undone says why the edge could not serve
(`RouteError.exhausted`), so the gateway can escalate it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal

import grpc

from edgefleet.v1 import node_pb2
from edgefleet_common.grpc_errors import StatusError
from node_agent.desired import NodeDesired
from orchestrator.fleet.fleet import Fleet
from orchestrator.manifest.desired import CoordinationSpec, DesiredState, Strategy
from orchestrator.routing.balancing import Balancer, ReplicaStats
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


CONNECTION_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)
"""Errors that count against a replica's circuit (not refusals the node sent)."""


Exhausted = Literal[
    "no-ready-replica", "circuits-open", "queues-full", "replicas-failed", "retry-budget-spent"
]
"""Why no edge replica could serve a request that nothing has started to answer."""


class RouteError(StatusError):
    """No replica could serve the request; `code` is the gRPC status to answer with.

    `exhausted` is set only when the edge could not serve and nothing ran: the
    request may go elsewhere. It stays None for a bad request, a deadline spent,
    or an outcome that is unknown (an answer or a tool had started).
    """

    def __init__(
        self, code: grpc.StatusCode, message: str, exhausted: Exhausted | None = None
    ) -> None:
        super().__init__(code, message)
        self.exhausted = exhausted


class Router:
    """Picks replicas for requests and retries safely on another one."""

    def __init__(
        self,
        fleet: Fleet,
        assignment: Callable[[], Mapping[str, NodeDesired]],
        deployments: Callable[[], Sequence[DesiredState]],
    ) -> None:
        self._fleet = fleet
        self._assignment = assignment
        self._deployments = deployments
        self.balancer = Balancer()

    def stats(self, target: str, node: str) -> ReplicaStats | None:
        """The router's figures for one replica, if it has served anything."""
        return self.balancer.known(target, node)

    def ready(self, target: str, kind: TargetKind) -> list[Candidate]:
        """The ready replicas of a target, by node id (no side effects)."""
        return candidates(self._fleet, self._assignment(), target, kind)

    def coordination(self, target: str) -> tuple[Strategy | None, bool]:
        """(strategy, session affinity) of the deployment that declares the target."""
        for deployment in self._deployments():
            names = {a.name for a in deployment.agents} | {m.alias for m in deployment.models}
            if target in names:
                if deployment.type != "distributed-edge":
                    return None, False
                return deployment.coordination.strategy, deployment.coordination.session_affinity
        return CoordinationSpec().strategy, False

    def order(
        self,
        target: str,
        kind: TargetKind,
        user: str = "",
        ready: Sequence[Candidate] | None = None,
    ) -> list[Candidate]:
        """The replicas to try for one request, best first (open circuits left out)."""
        strategy, affinity = self.coordination(target)
        if ready is None:
            ready = self.ready(target, kind)
        return self.balancer.order(target, ready, strategy, user if affinity else "")

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

        user = request.options.user
        async for chunk in self._route(request.agent, "agent", call, timeout, user=user):
            yield chunk

    async def proxy_model(
        self,
        alias: str,
        body: bytes,
        timeout: float,
        request_id: str = "",
        served_by: list[str] | None = None,
        user: str = "",
    ) -> AsyncIterator[node_pb2.ProxyModelChunk]:
        """Send an OpenAI chat-completions body to a node that has `alias` loaded; yields
        the runtime's response (status and content type on the first chunk). The serving
        node's id is appended to `served_by` before the first chunk."""
        request = node_pb2.ProxyModelRequest(
            model=alias, body=body, request_id=request_id or uuid.uuid4().hex
        )

        def call(stub: Any, candidate: Candidate, remaining: float) -> Any:
            return stub.ProxyModel(request, timeout=remaining)

        async for chunk in self._route(alias, "model", call, timeout, served_by, user):
            yield chunk

    async def _route(
        self,
        target: str,
        kind: TargetKind,
        call: Callable[[Any, Candidate, float], Any],
        timeout: float,
        served_by: list[str] | None = None,
        user: str = "",
    ) -> AsyncIterator[Any]:
        """Try the ready replicas in order until one answers; retry on another only while
        nothing reached the caller. A tool that starts is reported to the caller first,
        so a request is never retried after a tool (with side effects or not) ran."""
        deadline = time.monotonic() + timeout
        tried: list[str] = []
        refused_full = 0
        last_error = ""
        what = f"agent `{target}`" if kind == "agent" else f"model `{target}`"
        balancer = self.balancer
        balancer.request()
        ready = self.ready(target, kind)
        ordered = self.order(target, kind, user, ready)
        for candidate in ordered:
            link = self._fleet.get(candidate.node_id)
            if link is None or link.stub is None:
                continue
            if tried and not balancer.may_retry():
                raise RouteError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"{what} failed on {', '.join(tried)} ({last_error}) and the retry budget "
                    "is spent (too many failures across requests); not retried",
                    "retry-budget-spent",
                )
            tried.append(candidate.node_id)
            sent_any = False
            balancer.started(target, candidate.node_id)
            started = time.monotonic()
            try:
                stream = call(link.stub, candidate, max(deadline - time.monotonic(), 0.001))
                async for chunk in stream:
                    if not sent_any:
                        latency = (time.monotonic() - started) * 1000
                        balancer.first_byte(target, candidate.node_id, latency)
                        if served_by is not None:
                            served_by.append(candidate.node_id)
                    sent_any = True
                    yield chunk
                return
            except grpc.aio.AioRpcError as exc:
                last_error = f"{candidate.node_id}: {exc.details() or exc.code().name}"
                if exc.code() in CONNECTION_FAILURES:
                    balancer.failed(target, candidate.node_id)
                if sent_any:
                    raise RouteError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"{what} broke off on {candidate.node_id} after it had started "
                        f"answering ({exc.details()}); the outcome is unknown, so the "
                        "request was not retried",
                    ) from exc
                if exc.code() not in RETRIABLE:
                    raise RouteError(exc.code(), exc.details() or exc.code().name) from exc
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    refused_full += 1
                log.info(
                    "retrying on another replica",
                    extra={"target": target, "failed": candidate.node_id},
                )
            finally:
                balancer.finished(target, candidate.node_id)
            if time.monotonic() >= deadline:
                break
        if not tried:
            if ready and not ordered:
                raise RouteError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"no replica of {what} is reachable: every circuit is open "
                    "after repeated connection failures",
                    "circuits-open",
                )
            raise RouteError(
                grpc.StatusCode.UNAVAILABLE, f"no ready replica of {what}", "no-ready-replica"
            )
        exhausted: Exhausted | None = None  # the request's deadline is spent: not elsewhere
        if time.monotonic() < deadline:
            exhausted = "queues-full" if refused_full == len(tried) else "replicas-failed"
        if refused_full == len(tried):
            raise RouteError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"every replica of {what} has a full queue (tried {', '.join(tried)}); "
                "try again shortly",
                exhausted,
            )
        raise RouteError(
            grpc.StatusCode.UNAVAILABLE,
            f"every replica of {what} failed (tried {', '.join(tried)}; last: {last_error})",
            exhausted,
        )
