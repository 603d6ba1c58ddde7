"""Sending a request to a replica of an agent or model, and retrying on another.

A request is retried on a different replica only while that is safe: nothing
has reached the caller yet, and (for agents) no tool with side effects has
started. Otherwise the caller gets a clear error saying the outcome is unknown.
A failure that left nothing undone says why the edge could not serve
(`RouteError.exhausted`), so the gateway can escalate it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from edgefleet.v1 import node_pb2
from edgefleet_common.grpc_errors import StatusError
from edgefleet_contract.routing import RoutingIndex, TargetKind
from edgefleet_dataplane.attempts import RouteAttempts, budget_spent, give_up
from edgefleet_dataplane.balancer import Balancer, ReplicaStats
from edgefleet_dataplane.replicas import Candidate, NodeStub, ReplicaDirectory
from edgefleet_dataplane.retry_budget import RetryBudget
from edgefleet_dataplane.route_error import CONNECTION_FAILURES, RouteError, stub_status

log = logging.getLogger(__name__)

Call = Callable[[NodeStub, Candidate, float], AsyncIterable[Any]]
"""(stub, replica, seconds left) → the replica's answer, chunk by chunk."""


class Router:
    """Picks replicas for requests and retries safely on another one."""

    def __init__(
        self,
        directory: ReplicaDirectory,
        index: Callable[[], RoutingIndex],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`index()` gives the current routing index (how each target is balanced)."""
        self._directory = directory
        self._index = index
        self._clock = clock
        self.balancer = Balancer(clock)
        self.budget = RetryBudget()

    def stats(self, target: str, node: str) -> ReplicaStats | None:
        """The router's figures for one replica, if a request has gone to it."""
        return self.balancer.known(target, node)

    def ready(self, target: str, kind: TargetKind) -> list[Candidate]:
        """The ready replicas of a target, by node id (no side effects)."""
        return self._directory.ready(target, kind)

    async def invoke_agent(
        self, request: node_pb2.InvokeAgentRequest, timeout: float
    ) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
        """Run an agent request on a ready replica; yields its chunks."""
        request.request_id = request.request_id or uuid.uuid4().hex

        def call(stub: NodeStub, candidate: Candidate, remaining: float) -> AsyncIterable[Any]:
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

        def call(stub: NodeStub, candidate: Candidate, remaining: float) -> AsyncIterable[Any]:
            # Attempts run one after another, each once the last has ended: the request
            # is reused (its body may be large), with the generation of this replica.
            request.generation = candidate.generation
            return stub.ProxyModel(request, timeout=remaining)

        async for chunk in self._route(alias, "model", call, timeout, served_by, user):
            yield chunk

    async def _route(
        self,
        target: str,
        kind: TargetKind,
        call: Call,
        timeout: float,
        served_by: list[str] | None = None,
        user: str = "",
    ) -> AsyncIterator[Any]:
        """Try the ready replicas in order until one answers; retry on another only while
        nothing reached the caller. A tool that starts is reported to the caller first,
        so a request is never retried after a tool (with side effects or not) ran."""
        attempts = RouteAttempts(target, kind, self._clock() + timeout, self._clock)
        self.budget.request()
        ranked = self._ranked(attempts, user)
        for candidate in ranked:
            stub = self._directory.stub(candidate.node_id)
            if stub is None:  # reconnecting: skipped, and its circuit's trial left free
                continue
            if attempts.tried and not self.budget.may_retry():
                raise budget_spent(attempts)
            attempt = self._attempt(attempts, candidate, stub, call, served_by)
            async with contextlib.aclosing(attempt):
                async for chunk in attempt:
                    yield chunk
            if attempts.answered:
                return
            if attempts.expired():
                break
        raise give_up(attempts)

    def _ranked(self, attempts: RouteAttempts, user: str) -> Sequence[Candidate]:
        """The ready replicas in the order this request tries them (this takes its turn)."""
        target = attempts.target
        coordination = self._index().coordination(target)
        ready = self.ready(target, attempts.kind)
        affinity_user = user if coordination.session_affinity else ""
        ranked = self.balancer.rank(target, ready, coordination.strategy, affinity_user)
        self.balancer.advance(target)
        attempts.ready, attempts.ranked = len(ready), len(ranked)
        return ranked

    async def _attempt(
        self,
        attempts: RouteAttempts,
        candidate: Candidate,
        stub: NodeStub,
        call: Call,
        served_by: list[str] | None,
    ) -> AsyncGenerator[Any, None]:
        """One attempt on one replica: yields its chunks and marks the request answered
        when it ends; raises `RouteError` when no other replica may be tried."""
        target, node = attempts.target, candidate.node_id
        attempts.tried.append(node)
        self.balancer.claim_trial(target, node)  # only a half-open circuit has one
        self.balancer.started(target, node)
        started = self._clock()
        sent_any = False
        try:
            async for chunk in call(stub, candidate, attempts.remaining()):
                if not sent_any:
                    self.balancer.first_byte(target, node, (self._clock() - started) * 1000)
                    if served_by is not None:
                        served_by.append(node)
                    sent_any = True
                yield chunk
            attempts.answered = True
        except RouteError:  # a StatusError too, but the router's own verdict: passed on
            raise
        except (grpc.aio.AioRpcError, StatusError) as exc:
            # A peer's answer over gRPC, or the in-process stub's for the gateway's own
            # node: the same status codes, so the same rules.
            code, details = stub_status(exc)
            if code in CONNECTION_FAILURES:
                self.balancer.failed(target, node)
            error = attempts.failed(node, code, details, sent_any)
            if error is not None:
                raise error from exc
            log.info("retrying on another replica", extra={"target": target, "failed": node})
        finally:
            self.balancer.finished(target, node)
