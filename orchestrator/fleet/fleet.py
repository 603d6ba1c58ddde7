"""Every node the controller knows, its health transitions, its operator's mark (cordoned,
draining), and views for the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from edgefleet.v1 import common_pb2
from orchestrator.blob_peers import PeerNode, blob_key
from orchestrator.blob_records import BlobReport
from orchestrator.events import EventLog
from orchestrator.fleet.health import Health, node_state
from orchestrator.fleet.marks import NodeMarks
from orchestrator.fleet.node_link import ChannelFactory, NodeLink, sole_leader_term
from orchestrator.fleet.status_events import is_empty, status_events
from orchestrator.scheduler.fleet_view import SITE_LABEL
from orchestrator.scheduler.model import NodeState, NodeView
from orchestrator.store import Mark, NodeMarkRow, StateStore

log = logging.getLogger(__name__)

HEALTH_TICK_S = 0.1
"""How often silence is checked: bounds how late `not-ready` is seen after the timeout."""


class Fleet:
    """The node links, their health, and a snapshot of the fleet for scheduling."""

    def __init__(
        self,
        *,
        controller_id: str,
        channel_factory: ChannelFactory,
        events: EventLog,
        failure_timeout: Callable[[], float],
        on_change: Callable[[], None],
        revoked: Callable[[], Mapping[str, str]] = dict,
        term: Callable[[], int] = sole_leader_term,
    ) -> None:
        """`on_change` runs when something scheduling depends on changed (health, states);
        `revoked()` gives the node ids the controller no longer trusts, with the reason;
        `term()` the controller's leader term now (0: a standby, which only watches)."""
        self._controller_id = controller_id
        self._channel_factory = channel_factory
        self._events = events
        self._failure_timeout = failure_timeout
        self._on_change = on_change
        self._revoked = revoked
        self._term = term
        self._links: dict[str, NodeLink] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.marks = NodeMarks()
        """Cordoned and draining nodes (in memory until `keep_marks` gives a store)."""

    # -- membership ------------------------------------------------------------------

    async def add(self, node_id: str, address: str, discovered_by: str) -> NodeLink:
        """Know a node at an address (a new one is connected; a known one may move)."""
        link = self._links.get(node_id)
        if link is not None:
            if link.address != address and _may_move(link, discovered_by):
                link.discovered_by = discovered_by
                await link.move(address)
            return link
        link = NodeLink(
            node_id,
            address,
            discovered_by,
            controller_id=self._controller_id,
            channel_factory=self._channel_factory,
            on_status=self._status,
            on_stream=self._stream_broke,
            term=self._term,
        )
        self._links[node_id] = link
        reason = self._revoked().get(node_id)
        if reason is None:
            link.start()
        else:
            link.revoke(reason)
            self._evaluate(link)
        self._events.record(
            "info",
            "NodeDiscovered",
            f"node/{node_id}",
            f"{node_id} found at {address} ({discovered_by})",
            node_id=node_id,
        )
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="fleet health")
        return link

    def revoke(self, node_id: str, reason: str) -> None:
        """Stop trusting a node: no more talking to it; its work moves elsewhere."""
        link = self._links.get(node_id)
        if link is not None:
            link.revoke(reason)
            self._evaluate(link)

    async def rejoined(self, node_id: str) -> None:
        """A node joined again: talk to it anew (its old verdict no longer holds)."""
        link = self._links.get(node_id)
        if link is not None:
            await link.reconnect()
            self._evaluate(link)

    def new_term(self) -> None:
        """The controller's leader term changed (it leads now, or no longer): every link
        reopens its status stream with the new term and considers pushing again; nothing a
        node runs is touched. Called from the event loop."""
        for link in self._links.values():
            link.new_term()

    def reported_term(self) -> int:
        """The highest leader term a trusted node reports following (0: none reported)."""
        return max(
            (
                link.status.leader_term
                for link in self._links.values()
                if link.status is not None and not link.distrust and not link.revoked
            ),
            default=0,
        )

    def get(self, node_id: str) -> NodeLink | None:
        """The link of a node, if known."""
        return self._links.get(node_id)

    def links(self) -> list[NodeLink]:
        """Every known node, by id."""
        return [self._links[k] for k in sorted(self._links)]

    # -- cordon and drain ------------------------------------------------------------

    def keep_marks(self, store: StateStore) -> None:
        """Take the marks the store kept (a restarted controller keeps its cordons) and
        keep every change there; called once, before the first scheduling pass."""
        self.marks = NodeMarks(store)
        self._on_change()

    def mark(self, node_id: str, mark: Mark, reason: str) -> NodeMarkRow:
        """Cordon or drain a node (which need not be connected): no new work goes there;
        a draining node's work moves away."""
        row = self.marks.set(node_id, mark, reason)
        link = self._links.get(node_id)
        if link is not None:
            self.check_drained(link)
        self._on_change()
        return row

    def unmark(self, node_id: str) -> bool:
        """Uncordon a node; False when it was neither cordoned nor draining."""
        lifted = self.marks.clear(node_id)
        if lifted:
            self._on_change()
        return lifted

    def state_of(self, link: NodeLink) -> NodeState:
        """The node's state: its health, or `draining` (see `health.node_state`)."""
        mark = self.marks.get(link.node_id)
        return node_state(link.health, mark.mark if mark is not None else None)

    def check_drained(self, link: NodeLink) -> None:
        """Record `NodeDrained` once a draining node reports that it runs nothing and is
        assigned nothing."""
        mark = self.marks.get(link.node_id)
        if mark is None or mark.mark != "draining" or mark.drained_at is not None:
            return
        if link.health != "ready" or link.status is None:
            return
        if not is_empty(link.status, link.desired):
            return
        self.marks.set_drained(link.node_id)
        elapsed = time.time() - mark.since
        self._events.record(
            "info",
            "NodeDrained",
            f"node/{link.node_id}",
            f"{link.node_id} drained in {elapsed:.1f}s: it runs no agent and no model; "
            "it stays cordoned until uncordoned",
            node_id=link.node_id,
        )

    async def close(self) -> None:
        """Close every link."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await asyncio.gather(*(link.close() for link in self._links.values()))

    # -- health ----------------------------------------------------------------------

    def _status(self, link: NodeLink, changed: bool) -> None:
        self._evaluate(link)
        if changed and link.status is not None:
            for event in status_events(link.node_id, link.reported, link.status):
                self._events.record(
                    event.severity, event.reason, event.obj, event.message, node_id=link.node_id
                )
            link.reported = link.status
            self.check_drained(link)
            self._on_change()

    def _stream_broke(self, link: NodeLink, reason: str) -> None:
        self._evaluate(link)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_TICK_S)
            for link in list(self._links.values()):
                self._evaluate(link)

    def _evaluate(self, link: NodeLink) -> None:
        health = link.assess(time.monotonic(), self._failure_timeout())
        if health == link.health:
            return
        link.health, link.health_since = health, time.time()
        self._record_transition(link, health)
        self._on_change()

    def _record_transition(self, link: NodeLink, after: Health) -> None:
        obj, node = f"node/{link.node_id}", link.node_id
        if after == "ready":
            verb = "is back" if link.was_ready else "is ready"
            link.was_ready = True
            self._events.record(
                "info", "NodeReady", obj, f"{node} {verb} at {link.address}", node_id=node
            )
        elif after == "suspect":
            self._events.record(
                "warning",
                "NodeSuspect",
                obj,
                f"{node} status stream broke ({link.reason}); not-ready if silent for "
                f"{self._failure_timeout():g}s",
                node_id=node,
            )
        elif after == "untrusted":
            self._events.record(
                "warning",
                "NodeUntrusted",
                obj,
                f"{node} at {link.address} is untrusted and gets no work: {link.distrust}",
                node_id=node,
            )
        elif link.last_heard is not None:
            silent = time.monotonic() - link.last_heard
            self._events.record(
                "error",
                "NodeNotReady",
                obj,
                f"{node} unreachable: no status for {silent:.1f}s ({link.reason})",
                node_id=node,
            )

    # -- views -----------------------------------------------------------------------

    def scheduler_views(self) -> list[NodeView]:
        """Every node that has reported at least once, is untrusted or is marked, as the
        scheduler sees it.

        A node known only by address (static, or proposed by mDNS) but never heard
        from is `absent`: the scheduler keeps its pinned work waiting for it rather
        than failing it over before it ever had a chance to connect. Such a node is
        listed only when marked (so that it gets no new work, e.g. after a controller
        restart, before it reconnects). An untrusted one is in, so that nothing is
        assigned to it.
        """
        views = []
        for link in self.links():
            mark = self.marks.get(link.node_id)
            if link.status is not None or link.health == "untrusted":
                views.append(_view(link, self.state_of(link), cordoned=mark is not None))
            elif mark is not None:
                views.append(NodeView(id=link.node_id, state="absent", cordoned=True))
        views += [
            NodeView(id=node, state="absent", cordoned=True)
            for node in self.marks.all()
            if node not in self._links
        ]
        return views

    def peer_nodes(self) -> dict[str, PeerNode]:
        """Every known node as a source of model blobs for the others, by id."""
        return {link.node_id: _peer_node(link) for link in self.links()}

    def blob_reports(self) -> list[BlobReport]:
        """What the trusted nodes report of the blobs behind the models they were given."""
        return [report for link in self.links() for report in _blob_reports(link)]


def _blob_reports(link: NodeLink) -> list[BlobReport]:
    """The hashes a trusted node reports for the models of its current desired state."""
    status, desired = link.status, link.desired
    if not _trusted(link) or status is None or desired is None:
        return []
    if status.generation != desired.generation:
        return []  # its models may come from another state's sources
    sources = {want.alias: want.source for want in desired.models}
    return [
        BlobReport(link.node_id, sources[m.alias], m.sha256, m.size_bytes)
        for m in status.models
        if m.sha256 and m.alias in sources
    ]


def _may_move(link: NodeLink, discovered_by: str) -> bool:
    # A static address (operator's word) is not overridden by what mDNS proposes.
    return not (link.discovered_by in ("static", "manifest") and discovered_by == "mdns")


def _view(link: NodeLink, state: NodeState, *, cordoned: bool) -> NodeView:
    """A node that has reported, or is untrusted, as the scheduler sees it."""
    status = link.status
    if status is None:  # untrusted before it ever reported: it gets nothing
        return NodeView(id=link.node_id, state=state, memory_total_bytes=0, cordoned=cordoned)
    # What a node runs under another generation (e.g. state it restored after a
    # restart) says nothing about whether it runs what it was assigned now.
    current = link.desired is None or status.generation == link.desired.generation
    return NodeView(
        id=link.node_id,
        state=state,
        cordoned=cordoned,
        memory_total_bytes=status.capacity.memory_total_bytes,
        labels=dict(link.labels),
        ready_models=frozenset(
            m.alias for m in status.models if current and m.state == common_pb2.MODEL_STATE_READY
        ),
        ready_agents=frozenset(
            a.name for a in status.agents if current and a.state == common_pb2.AGENT_STATE_READY
        ),
        blobs=frozenset(b.sha256 for b in status.blobs if b.complete and b.sha256),
    )


def _trusted(link: NodeLink) -> bool:
    return link.status is not None and not link.distrust and not link.revoked


def _peer_node(link: NodeLink) -> PeerNode:
    """A node as a source of blobs: what it holds whole and what it is fetching."""
    complete: set[str] = set()
    fetching: set[str] = set()
    status = link.status
    if status is not None:
        for blob in status.blobs:
            if blob.sha256:
                (complete if blob.complete else fetching).add(blob.sha256)
        # A blob not pinned yet is named by its source while it downloads.
        downloading = {m.alias for m in status.models if m.HasField("download")}
        for want in link.desired.models if link.desired is not None else ():
            key = blob_key(want)
            if key is not None and want.alias in downloading:
                fetching.add(key)
    return PeerNode(
        id=link.node_id,
        address=link.address,
        site=link.labels.get(SITE_LABEL, ""),
        usable=link.health == "ready" and _trusted(link),
        complete=frozenset(complete),
        fetching=frozenset(fetching),
    )
