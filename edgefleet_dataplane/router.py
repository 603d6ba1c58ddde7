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
from edgefleet_dataplane.route_error import CONNECTION_FAILURES, MOVED, RouteError, stub_status

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
        self, request: node_pb2.InvokeAgentRequest, timeout: float, *, whole: bool = False
    ) -> AsyncIterator[node_pb2.InvokeAgentChunk]:
        """Run an agent request on a ready replica; yields its chunks. With `whole` (the
        caller answers only once the reply is complete), an attempt that breaks off is
        retried elsewhere until a tool starts."""
        request.request_id = request.request_id or uuid.uuid4().hex

        def call(stub: NodeStub, candidate: Candidate, remaining: float) -> AsyncIterable[Any]:
            attempt = node_pb2.InvokeAgentRequest()
            attempt.CopyFrom(request)
            attempt.generation = candidate.generation
            return stub.InvokeAgent(attempt, timeout=remaining)

        user = request.options.user
        route = self._route(request.agent, "agent", call, timeout, user=user, whole=whole)
        async for chunk in route:
            yield chunk

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
        """Send an OpenAI chat-completions body to a node that has `alias` loaded; yields
        the runtime's response (status and content type on the first chunk). The serving
        node's id is appended to `served_by` before the first chunk. With `whole`, an
        attempt that breaks off before its end is retried elsewhere."""
        request = node_pb2.ProxyModelRequest(
            model=alias, body=body, request_id=request_id or uuid.uuid4().hex
        )

        def call(stub: NodeStub, candidate: Candidate, remaining: float) -> AsyncIterable[Any]:
            # Attempts run one after another, each once the last has ended: the request
            # is reused (its body may be large), with the generation of this replica.
            request.generation = candidate.generation
            return stub.ProxyModel(request, timeout=remaining)

        async for chunk in self._route(alias, "model", call, timeout, served_by, user, whole):
            yield chunk

    async def _route(
        self,
        target: str,
        kind: TargetKind,
        call: Call,
        timeout: float,
        served_by: list[str] | None = None,
        user: str = "",
        whole: bool = False,
    ) -> AsyncIterator[Any]:
        """Try the ready replicas in order until one answers; retry on another only while
        nothing reached the caller. A tool that starts is reported to the caller first,
        so a request is never retried after a tool (with side effects or not) ran. With
        `whole`, an attempt's chunks are held until it ends (or a tool starts), so a
        break before then reaches nobody and is retried."""
        attempts = RouteAttempts(target, kind, self._clock() + timeout, self._clock)
        self.budget.request()
        ranked = self._ranked(attempts, user)
        for candidate in ranked:
            stub = self._directory.stub(candidate.node_id)
            if stub is None:  # reconnecting: skipped, and its circuit's trial left free
                continue
            if attempts.tried and not self.budget.may_retry():
                raise budget_spent(attempts)
            attempt = self._attempt(attempts, candidate, stub, call, served_by, whole)
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
        whole: bool,
    ) -> AsyncGenerator[Any, None]:
        """One attempt on one replica: yields its chunks and marks the request answered
        when it ends; raises `RouteError` when no other replica may be tried."""
        target, node = attempts.target, candidate.node_id
        attempts.tried.append(node)
        self.balancer.claim_trial(target, node)  # only a half-open circuit has one
        self.balancer.started(target, node)
        started = self._clock()
        delivery = _Delivery(whole)
        try:
            async for chunk in call(stub, candidate, attempts.remaining()):
                if not delivery.heard:
                    self.balancer.first_byte(target, node, (self._clock() - started) * 1000)
                for passed in delivery.receive(chunk):
                    if served_by is not None and not served_by:
                        served_by.append(node)
                    yield passed
            for passed in delivery.end():
                if served_by is not None and not served_by:
                    served_by.append(node)
                yield passed
            attempts.answered = True
        except RouteError:  # a StatusError too, but the router's own verdict: passed on
            raise
        except (grpc.aio.AioRpcError, StatusError) as exc:
            # A peer's answer over gRPC, or the in-process stub's for the gateway's own
            # node: the same status codes, so the same rules.
            code, details = stub_status(exc)
            if code in CONNECTION_FAILURES:
                self.balancer.failed(target, node)
            elif code in MOVED:
                self._directory.moved(target, attempts.kind, node)
            error = attempts.failed(node, code, details, delivery.reached)
            if error is not None:
                raise error from exc
            log.info("retrying on another replica", extra={"target": target, "failed": node})
        finally:
            self.balancer.finished(target, node)


class _Delivery:
    """What of one attempt's chunks has reached the caller.

    Chunks pass straight on, unless the caller takes the answer only `whole`: then they
    are held until the attempt ends, or until a tool starts (which the caller must hear
    of before anything could run it twice); held chunks that never passed on let the
    request go to another replica.
    """

    def __init__(self, whole: bool) -> None:
        self._holding = whole
        self._held: list[Any] = []
        self.heard = False
        """Whether the replica sent anything."""
        self.reached = False
        """Whether the caller got anything of this attempt."""

    def receive(self, chunk: Any) -> list[Any]:
        """The chunks to pass on now that `chunk` came."""
        self.heard = True
        if self._holding and not _starts_a_tool(chunk):
            self._held.append(chunk)
            return []
        self._holding = False
        return self._release([chunk])

    def end(self) -> list[Any]:
        """The chunks still held when the attempt ended well."""
        return self._release([])

    def _release(self, more: list[Any]) -> list[Any]:
        passed, self._held = [*self._held, *more], []
        self.reached = self.reached or bool(passed)
        return passed


def _starts_a_tool(chunk: Any) -> bool:
    return isinstance(chunk, node_pb2.InvokeAgentChunk) and chunk.HasField("tool")
