"""The controller's connection to one node: its status stream, its health, and pushes.

A link keeps one status stream open (reconnecting with a short backoff), so it
always holds the node's latest whole status. It pushes the node's desired state
whenever the node reports a different generation, retrying with backoff; a
node never receives the same generation twice with different content. Likewise
it pushes the fleet's routing table whenever the node reports routing with
another one (never to a node that is untrusted or revoked).

Pushes carry the controller's leader term, and happen only while it has one
(term() > 0): a standby controller (term 0) watches its nodes but never pushes.
A node that follows a newer leader refuses the push; the link says so once and
waits for a new term or a new state to push, rather than retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from edgefleet.v1 import node_pb2, node_pb2_grpc
from edgefleet_common.backoff import Backoff
from edgefleet_contract.desired import NodeDesired
from edgefleet_contract.wire import NEWER_LEADER, desired_to_proto
from orchestrator.fleet.health import Health, HealthInputs, assess

log = logging.getLogger(__name__)

ChannelFactory = Callable[[str, str], Any]
"""(node id, HOST:PORT) → a grpc.aio channel: mutual TLS that checks the node's certificate
names that id, or plaintext with `--insecure`."""

_TLS_FAILURE = ("ssl", "certificate")
"""Words gRPC uses when a connection failed at TLS rather than on the network."""

RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 2.0
PUSH_TIMEOUT_S = 10.0
PUSH_RETRY_MIN_S = 0.5
PUSH_RETRY_MAX_S = 10.0
INFO_TIMEOUT_S = 5.0


def sole_leader_term() -> int:
    """The leader term of a controller without an election: it leads alone, always."""
    return 1


class NodeLink:
    """One node as the controller sees it, and the channel to it."""

    def __init__(
        self,
        node_id: str,
        address: str,
        discovered_by: str,
        *,
        controller_id: str,
        channel_factory: ChannelFactory,
        on_status: Callable[[NodeLink, bool], None],
        on_stream: Callable[[NodeLink, str], None],
        term: Callable[[], int] = sole_leader_term,
    ) -> None:
        """`on_status(link, changed)` runs on every status (changed: more than a heartbeat);
        `on_stream(link, reason)` when the stream breaks or cannot be opened; `term()` is the
        controller's leader term now (0: it does not lead, so it only watches)."""
        self.node_id = node_id
        self.address = address
        self.discovered_by = discovered_by
        self.labels: dict[str, str] = {}
        self.health: Health = "not-ready"
        self.health_since = time.time()
        self.was_ready = False
        """Whether the node has been ready before (to tell "ready" from "back")."""
        self.reason = "not connected yet"
        self.connected = False
        self.last_heard: float | None = None
        """Monotonic time of the last status message."""
        self.last_heard_wall: float | None = None
        self.status: node_pb2.NodeStatus | None = None
        self.reported: node_pb2.NodeStatus | None = None
        """The last status the fleet turned into events (to see what changed since)."""
        self.info: node_pb2.NodeInfo | None = None
        self.desired: NodeDesired | None = None
        """What the node should run (with its generation); None: nothing assigned."""
        self.push_error = ""
        self.revoked = ""
        """Why an operator revoked the node (empty: not revoked)."""
        self.distrust = ""
        """Why the node is not trusted (no certificate from this cluster, revoked); empty
        when it proved itself, or has not been reached yet."""
        self._controller_id = controller_id
        self._channel_factory = channel_factory
        self._on_status = on_status
        self._on_stream = on_stream
        self._term = term
        self.watch_term = 0
        """The leader term the status stream was opened with."""
        self.state_refused_at = 0
        """The term the node refused the desired state at as an older leader's (0: none)."""
        self.routes_refused_at = 0
        """The same for the routing table; neither is pushed again at that term."""
        self._channel: Any = None
        self._stub: Any = None
        self._stream: Any = None
        self._push_wanted = asyncio.Event()
        self.routes: node_pb2.ApplyRoutesRequest | None = None
        """The routing table to push (None: none made yet)."""
        self.routes_acked = 0
        """The table generation the node accepted on this connection (0: none yet)."""
        self.routes_refused = 0
        """The generation of the last table the node refused as older than its own."""
        self.routes_error = ""
        self._routes_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- what the node reports -------------------------------------------------------

    @property
    def routes_generation(self) -> int:
        """The routing table generation the node last reported (0 before any status)."""
        return self.status.routes_generation if self.status is not None else 0

    @property
    def observed_generation(self) -> int:
        """The generation the node last reported running (0 before any status)."""
        return self.status.generation if self.status is not None else 0

    def assess(self, now: float, failure_timeout: float) -> Health:
        """The node's health right now."""
        if self.distrust:
            return "untrusted"
        return assess(HealthInputs(self.connected, self.last_heard, now, failure_timeout))

    @property
    def stub(self) -> Any:
        """The node API stub on the current channel (None before the first connect)."""
        return self._stub

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        """Open the status stream and start pushing."""
        self._tasks = [
            asyncio.create_task(self._watch(), name=f"watch {self.node_id}"),
            asyncio.create_task(self._push_loop(), name=f"push {self.node_id}"),
            asyncio.create_task(self._routes_loop(), name=f"routes {self.node_id}"),
        ]

    def new_term(self) -> None:
        """The controller's leader term changed: reopen the status stream with it (the node
        learns the new term; nothing it runs is touched) and consider pushing again."""
        self.state_refused_at = self.routes_refused_at = 0
        if self._closed or self.revoked or not self._tasks:
            return
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()
        watch = self._tasks[0]
        watch.cancel()
        self._tasks[0] = asyncio.create_task(self._rewatch(watch), name=f"watch {self.node_id}")
        self._push_wanted.set()
        self._routes_wanted.set()

    async def _rewatch(self, previous: asyncio.Task[None]) -> None:
        await asyncio.gather(previous, return_exceptions=True)
        await self._watch()

    async def move(self, address: str) -> None:
        """The node is now found at another address: reconnect there."""
        if address == self.address:
            return
        log.info("node moved", extra={"node": self.node_id, "from": self.address, "to": address})
        self.address = address
        await self.reconnect()

    async def reconnect(self) -> None:
        """Talk to the node anew on a fresh channel (it moved, or joined again: an earlier
        verdict on its trust no longer holds)."""
        self.distrust = f"revoked: {self.revoked}" if self.revoked else ""
        await self._close_channel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.connected = False
        if not self._closed and not self.revoked:
            self.start()

    async def close(self) -> None:
        """Stop watching and pushing; close the channel."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close_channel()

    async def _close_channel(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()

    # -- the status stream -----------------------------------------------------------

    async def _watch(self) -> None:
        backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)
        while not self._closed:
            heard_before = self.last_heard
            reason = await self._stream_once()
            self.connected = False
            self.reason = reason
            self._on_stream(self, reason)
            if self._closed:
                return
            # A stream that delivered something was healthy: reconnect after the shortest
            # delay; repeated failures to connect back off up to a couple of seconds.
            if self.last_heard != heard_before:
                backoff.reset()
            await backoff.wait()

    async def _stream_once(self) -> str:
        """Open the stream and follow it until it breaks; returns why it broke."""
        if self._channel is None:
            self._channel = self._channel_factory(self.node_id, self.address)
            self._stub = node_pb2_grpc.NodeServiceStub(self._channel)
        try:
            try:
                info = await self._stub.GetInfo(node_pb2.GetInfoRequest(), timeout=INFO_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                self._judge_trust(exc)
                raise
            self.distrust = ""
            if info.node_id != self.node_id:
                return (
                    f"{self.address} answers as node `{info.node_id}`, not `{self.node_id}`; "
                    "it gets no work until this is resolved"
                )
            self.info = info
            self.labels = dict(info.labels)
            self.watch_term = max(self._term(), 0)
            stream = self._stream = self._stub.WatchStatus(
                node_pb2.WatchStatusRequest(
                    controller_id=self._controller_id, leader_term=self.watch_term
                )
            )
            async for status in stream:
                self._receive(status)
        except grpc.aio.AioRpcError as exc:
            return _describe(exc)
        return "the node ended its status stream"

    def _judge_trust(self, error: grpc.aio.AioRpcError) -> None:
        """A node that answers but fails TLS, or refuses our certificate, is untrusted."""
        details = (error.details() or "").lower()
        if error.code() == grpc.StatusCode.UNAVAILABLE and any(w in details for w in _TLS_FAILURE):
            self.distrust = (
                "no valid certificate from this cluster for this node id (TLS handshake "
                f"failed: {_describe(error)})"
            )
        elif error.code() in (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
        ):
            self.distrust = f"the node refused the controller: {_describe(error)}"

    def revoke(self, reason: str) -> None:
        """Trust the node no longer: stop talking to it, for good (it is listed untrusted;
        a new address or a reconnect does not undo this)."""
        self.revoked = reason
        self.distrust = f"revoked: {reason}"
        self.connected = False
        for task in self._tasks:
            task.cancel()

    def _receive(self, status: node_pb2.NodeStatus) -> None:
        previous = self.status
        first = not self.connected
        self.connected = True
        self.last_heard = time.monotonic()
        self.last_heard_wall = time.time()
        self.status = status
        changed = first or previous is None or _essence(previous) != _essence(status)
        if first or (self.desired is not None and status.generation != self.desired.generation):
            self._push_wanted.set()
        if first:
            self.routes_acked = 0  # a new connection: perhaps a restarted node
        if self._routes_behind():
            self._routes_wanted.set()
        self._on_status(self, changed)

    # -- pushing the desired state ---------------------------------------------------

    def want(self, desired: NodeDesired | None) -> None:
        """Make `desired` the state to push (pushed when it differs from the node's)."""
        self.desired = desired
        self.state_refused_at = 0
        self._push_wanted.set()

    async def _push_loop(self) -> None:
        backoff = Backoff(PUSH_RETRY_MIN_S, PUSH_RETRY_MAX_S)
        while not self._closed:
            await self._push_wanted.wait()
            self._push_wanted.clear()
            desired, term = self.desired, self._term()
            if desired is None or not self.connected or self._stub is None:
                continue
            if self.observed_generation == desired.generation:
                continue
            if not _may_push(term, self.state_refused_at):
                continue
            request = desired_to_proto(desired)
            request.leader_term = term
            try:
                await self._stub.ApplyState(request, timeout=PUSH_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                if _newer_leader(exc):
                    self.state_refused_at = term
                    self.push_error = self._refused(exc, term, f"generation {desired.generation}")
                    continue
                self.push_error = _describe(exc)
                log.warning(
                    "pushing desired state failed",
                    extra={
                        "node": self.node_id,
                        "generation": desired.generation,
                        "error": self.push_error,
                    },
                )
                if exc.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.FAILED_PRECONDITION,
                ):
                    # Retrying the same request cannot help; the reconciler decides
                    # (a newer generation, or a fixed state).
                    self._on_status(self, True)
                    continue
                await backoff.wait()
                self._push_wanted.set()
                continue
            backoff.reset()
            self.push_error = ""

    # -- pushing the routing table ---------------------------------------------------

    def want_routes(self, request: node_pb2.ApplyRoutesRequest) -> None:
        """Make this the routing table to push (pushed when the node routes with another)."""
        self.routes = request
        self.routes_refused_at = 0
        if self._routes_behind():
            self._routes_wanted.set()

    def _routes_behind(self) -> bool:
        """Whether the node should be sent the current table: it reports another, and has
        not accepted this one on this connection."""
        routes = self.routes
        if routes is None or self.status is None:
            return False
        wanted = routes.table.generation
        return self.routes_generation != wanted and self.routes_acked != wanted

    async def _routes_loop(self) -> None:
        backoff = Backoff(PUSH_RETRY_MIN_S, PUSH_RETRY_MAX_S)
        while not self._closed:
            await self._routes_wanted.wait()
            self._routes_wanted.clear()
            routes, term = self.routes, self._term()
            if routes is None or not self.connected or self._stub is None:
                continue
            if self.distrust or self.revoked or not self._routes_behind():
                continue
            if not _may_push(term, self.routes_refused_at):
                continue
            request = node_pb2.ApplyRoutesRequest(table=routes.table, leader_term=term)
            try:
                reply = await self._stub.ApplyRoutes(request, timeout=PUSH_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                if _newer_leader(exc):
                    self.routes_refused_at = term
                    generation = request.table.generation
                    self.routes_error = self._refused(exc, term, f"routing table {generation}")
                    continue
                if not self._routes_failed(exc, request.table.generation):
                    await backoff.wait()
                    self._routes_wanted.set()
                continue
            backoff.reset()
            self.routes_error = ""
            self.routes_acked = reply.generation

    def _routes_failed(self, error: grpc.aio.AioRpcError, generation: int) -> bool:
        """Note a failed push; True when retrying the same table cannot help."""
        self.routes_error = _describe(error)
        log.warning(
            "pushing the routing table failed",
            extra={"node": self.node_id, "generation": generation, "error": self.routes_error},
        )
        if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
            # The node holds a newer table (e.g. this controller's store came from a
            # backup): the table is numbered anew above the node's.
            self.routes_refused = generation
            self._on_status(self, True)
            return True
        # A table the node calls invalid, or a node without a gateway (an older one):
        # the next table is tried when there is one.
        return error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED)

    # -- the leader term -------------------------------------------------------------

    def _refused(self, error: grpc.aio.AioRpcError, term: int, what: str) -> str:
        """Note a push the node refused for a newer leader; returns the reason."""
        reason = _describe(error)
        log.warning(
            "the node follows a newer leader; not pushing again until a new term or state",
            extra={"node": self.node_id, "pushed": what, "leader_term": term, "error": reason},
        )
        return reason


def _may_push(term: int, refused_at: int) -> bool:
    """Whether to push at leader `term`: only while leading, and not at a term the node
    refused already (a new term or a new thing to push clears `refused_at`)."""
    return term > 0 and term != refused_at


def _newer_leader(error: grpc.aio.AioRpcError) -> bool:
    """Whether a push was refused because the node follows a newer leader than this one."""
    return error.code() == grpc.StatusCode.FAILED_PRECONDITION and NEWER_LEADER in (
        error.details() or ""
    )


def _essence(status: node_pb2.NodeStatus) -> tuple[object, ...]:
    """What in a status matters to scheduling and routing (not load figures or time)."""
    return (
        status.generation,
        tuple((m.alias, m.state, m.reason) for m in status.models),
        tuple((a.name, a.state, a.reason) for a in status.agents),
    )


def _describe(error: grpc.aio.AioRpcError) -> str:
    details = error.details() or ""
    return f"{error.code().name.lower()}: {details}" if details else error.code().name.lower()
