"""Leading or standing by: the deciding parts run only while this controller leads.

The leader runs the reconciler and the routing table; a standby keeps watching the
nodes, serves reads and its gateway from the assignment the leader stored, and takes
over with the leader's decisions as its starting point, so nothing that is right is
restarted. Changes another controller makes in the store (an apply, a cordon, a new
API key) wake whichever controller must act on them.

A new leader takes a term from the store's counter (above every term before it) and
every push carries it. A node that reports a higher term than the leader's — the store
came back from a backup older than what the nodes saw — makes the leader take a term
above that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.leadership import Leadership
from orchestrator.reconciler import Reconciler
from orchestrator.routes_publisher import RoutesPublisher
from orchestrator.store import StateStore, StoreError

log = logging.getLogger(__name__)

MEMBER_BEAT_S = 5.0
"""How often a controller writes that it is alive (listed by `status` and in admin configs)."""
ROLE_CHECK_S = 0.2
"""How often the lease's deadline is looked at, besides every change the election reports:
a leader cut off from etcd stops within this of its deadline."""

_WAKES_LEADER = frozenset({"revisions", "marks", "credentials", "nodes", "settings"})


class ControlRole:
    """Starts and stops the reconciler and the routing table with leadership."""

    def __init__(
        self,
        leadership: Leadership,
        store: StateStore,
        fleet: Fleet,
        reconciler: Reconciler,
        routes: RoutesPublisher,
        events: EventLog,
        *,
        address: str = "",
        reported_term: Callable[[], int] = lambda: 0,
    ) -> None:
        """`address` is this controller's API address (for the member list);
        `reported_term()` gives the highest term the nodes report following."""
        self._address = address
        self._leadership = leadership
        self._reported_term = reported_term
        self._store = store
        self._fleet = fleet
        self._reconciler = reconciler
        self._routes = routes
        self._events = events
        self.acting_term = 0
        """The term this controller acts in (0: standing by)."""
        self._token = 0
        """The leadership token the term was taken under."""
        self._check = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._role_changed = asyncio.Event()

    def start(self) -> None:
        """Follow the leadership and the store from now on."""
        loop = asyncio.get_running_loop()
        self._store.on_change(lambda areas: _on_loop(loop, lambda: self._store_changed(areas)))
        self._task = asyncio.create_task(self._follow(), name="control role")
        self._beat = asyncio.create_task(self._member_beat(), name="member heartbeat")
        self._leadership.start(self._check.set)

    async def close(self) -> None:
        """Stop acting and step down."""
        for task in (self._task, self._beat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._stand_by()
        self._leadership.close()

    def term(self) -> int:
        """The term to push in: while this controller still leads under the token it took
        the term with, else 0 (checked at each push: a lease past its deadline stops
        pushes at once, before the role changes)."""
        if self._token and self._leadership.token() == self._token:
            return self.acting_term
        return 0

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check.wait(), ROLE_CHECK_S)
            self._check.clear()
            try:
                await self._reassess()
            except Exception:
                log.exception("changing role failed; looking again")
                await asyncio.sleep(ROLE_CHECK_S)
                self._check.set()

    async def _reassess(self) -> None:
        token = self._leadership.token()
        if token and token != self._token:
            await self._lead(token, floor=self._reported_term())
        elif token and self._reported_term() > self.acting_term:
            reported = self._reported_term()
            log.warning(
                "a node follows term %d, above this leader's %d (a store restored from a "
                "backup?): taking a term above it",
                reported,
                self.acting_term,
            )
            await self._lead(token, floor=reported)
        elif not token and self._token:
            lost = self.acting_term
            await self._stand_by()
            self._events.record(
                "warning",
                "LeaderLost",
                "controller",
                f"controller {self._store.controller_id} no longer leads (term {lost}); "
                "it stopped placing work and pushing to nodes",
            )

    async def _lead(self, token: int, *, floor: int) -> None:
        """Take over: a term above `floor`, the store's decisions, then the nodes learn
        the new term."""
        if self._token:
            await self._stand_by()
        self._store.fence(token)
        term = self._store.begin_term(floor)
        self._reconciler.reload_assignment()
        self._fleet.marks.reload()
        self._token, self.acting_term = token, term
        self._role_changed.set()
        self._fleet.new_term()
        self._reconciler.start()
        self._routes.start()
        self._reconciler.trigger()
        self._routes.trigger()
        if self._leadership.view().role != "single":
            self._events.record(
                "info",
                "LeaderElected",
                "controller",
                f"controller {self._store.controller_id} leads (term {term})",
            )

    async def _stand_by(self) -> None:
        """Stop deciding and pushing (links keep watching the nodes)."""
        if not self._token:
            return
        self._token = self.acting_term = 0
        self._role_changed.set()
        await self._reconciler.close()
        await self._routes.close()
        self._fleet.new_term()

    async def _member_beat(self) -> None:
        """Say in the store, every few seconds, that this controller is alive and its role.
        In a worker thread: an etcd out of reach must not hold up the event loop."""
        while True:
            role = self._leadership.view().role
            if role != "single":
                role = "leader" if self.term() else "standby"
            try:
                await asyncio.to_thread(
                    self._store.register_member, self._store.controller_id, self._address, role
                )
            except StoreError as exc:
                log.debug("could not say this controller is alive: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._role_changed.wait(), MEMBER_BEAT_S)
            self._role_changed.clear()

    def _store_changed(self, areas: set[str]) -> None:
        """Act on what changed in the store (on the event loop)."""
        try:
            if "marks" in areas:
                self._fleet.marks.reload()
            if self._token:
                if areas & _WAKES_LEADER:
                    self._reconciler.trigger()
                if "credentials" in areas:
                    self._routes.trigger()
            elif "assignment" in areas:
                self._reconciler.reload_assignment()
            if "events" in areas:
                self._events.catch_up()
        except StoreError as exc:
            log.warning("reading the store after a change failed: %s", exc)


def _on_loop(loop: asyncio.AbstractEventLoop, call: Callable[[], None]) -> None:
    """Run `call` on the event loop (store callbacks come from the store's own thread)."""
    if not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(call)
