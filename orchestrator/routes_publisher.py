"""The fleet's routing table: made from what the controller knows, numbered, handed to every
node's link.

A table is remade (debounced: a burst of status changes makes one) whenever the
reconciler finishes a pass — which readiness, the assignment, the revisions and
the periodic resync all cause — and when the API keys change. Its generation
comes from the store: the same content keeps its number, even across a
controller restart; new content gets the next one, above any generation a node
reports holding or refused ours for.

A controller that just started waits until every node it knows has reported (or
`STARTUP_GRACE_S` passed) before making its first table: a node it has not heard
from yet is not a node without replicas, and the nodes route with their last
table meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_contract.desired import NodeDesired
from edgefleet_contract.routes_wire import table_to_proto
from edgefleet_contract.routing import RoutingIndex
from edgefleet_contract.routing_table import RoutingTable
from orchestrator.fleet.fleet import Fleet
from orchestrator.fleet.node_link import NodeLink
from orchestrator.routes_table import ReadyNode, routes_content
from orchestrator.store import StateStore

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.2
"""How long triggers gather before a table is made."""
STARTUP_GRACE_S = 10.0
"""How long a starting controller waits for every known node to report."""


def ready_nodes(links: Iterable[NodeLink]) -> dict[str, ReadyNode]:
    """The ready nodes among `links`, with what each reports ready, by id."""
    found = {}
    for link in links:
        status = link.status
        if link.health != "ready" or status is None:
            continue
        found[link.node_id] = ReadyNode(
            address=link.address,
            agents=frozenset(
                a.name for a in status.agents if a.state == common_pb2.AGENT_STATE_READY
            ),
            models=frozenset(
                m.alias for m in status.models if m.state == common_pb2.MODEL_STATE_READY
            ),
        )
    return found


def generation_floor(links: Iterable[NodeLink], current: int) -> int:
    """The least generation the next table may have: at least what every node reports
    holding, and above the current one when a node refused it (it holds a newer one)."""
    floor = 0
    for link in links:
        floor = max(floor, link.routes_generation)
        if current and link.routes_refused >= current:
            floor = max(floor, current + 1)
    return floor


class RoutesPublisher:
    """Makes the routing table and hands it to every node's link."""

    def __init__(
        self,
        store: StateStore,
        fleet: Fleet,
        *,
        assignment: Callable[[], Mapping[str, NodeDesired]],
        index: Callable[[], RoutingIndex],
        key_digests: Callable[[], Iterable[str]],
    ) -> None:
        """`assignment()`, `index()` and `key_digests()` give the current assignment,
        routing index, and SHA-256 digests of the API keys in force."""
        self._store = store
        self._fleet = fleet
        self._assignment = assignment
        self._index = index
        self._key_digests = key_digests
        self.table = RoutingTable(
            generation=store.routes_generation(), controller_id=store.controller_id
        )
        """The current table; until the first is made, only the generation of the last
        one (the nodes route with it)."""
        self._started = time.monotonic()
        self._request: node_pb2.ApplyRoutesRequest | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def generation(self) -> int:
        """The current table's generation (0: none made yet)."""
        return self.table.generation

    def trigger(self) -> None:
        """Ask for the table to be remade soon."""
        self._wake.set()

    def start(self) -> None:
        """Remake the table in the background whenever triggered (again, after `close`:
        then from the generation in the store, which another leader may have raised)."""
        if self._task is not None:
            return
        if self._request is not None or self.table.generation != self._store.routes_generation():
            self.table = RoutingTable(
                generation=self._store.routes_generation(),
                controller_id=self._store.controller_id,
            )
            self._request = None
            self._started = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="routes publisher")

    async def close(self) -> None:
        """Stop remaking the table."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def settled(self) -> bool:
        """Whether the first table may be made: every known node — every linked one, and
        every one the stored assignment gives work to, found again or not — has
        reported, is untrusted or revoked; or the startup grace is over."""
        if self._request is not None or time.monotonic() - self._started >= STARTUP_GRACE_S:
            return True
        links = {link.node_id: link for link in self._fleet.links()}
        # A node discovery has not found again yet still runs its work: a table made
        # without it would send its replicas' requests nowhere.
        working = {node for node, d in self._assignment().items() if d.models or d.agents}
        if not working <= links.keys():
            return False
        return all(
            link.status is not None or link.health == "untrusted" or link.revoked
            for link in links.values()
        )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(DEBOUNCE_S)
            if not self.settled():
                continue  # the wake stays set: look again after the next debounce
            self._wake.clear()
            try:
                self.publish()
            except Exception:
                log.exception("making the routing table failed; the next trigger retries")

    def publish(self) -> RoutingTable:
        """Make the table now, number it, and hand it to every link (each pushes it when
        its node routes with another)."""
        links = self._fleet.links()
        content = routes_content(
            self._assignment(), ready_nodes(links), self._index(), self._key_digests()
        )
        key = content.content_key()
        floor = generation_floor(links, self.table.generation)
        if key != self.table.content_key() or floor > self.table.generation or not self._request:
            generation = self._store.number_routes(key, floor=floor)
            if generation != self.table.generation:
                log.info("routing table", extra={"generation": generation})
            self.table = content.model_copy(
                update={"generation": generation, "controller_id": self._store.controller_id}
            )
            self._request = node_pb2.ApplyRoutesRequest(table=table_to_proto(self.table))
        for link in links:
            link.want_routes(self._request)
        return self.table
