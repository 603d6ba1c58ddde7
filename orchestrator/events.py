"""The event log: what happened, for people — stored, logged, and streamed to watchers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

from orchestrator.store import EventRow, StateStore, StoreError

log = logging.getLogger("orchestrator.events")

Severity = Literal["info", "warning", "error"]
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
WATCHER_BACKLOG = 1000
"""Events a slow watcher may fall behind by before it is cut off (it can resume by id)."""


class EventLog:
    """Records events in the store and hands them to live watchers."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._watchers: set[asyncio.Queue[EventRow | None]] = set()
        self._last_id = 0
        """The newest stored event handed to the watchers."""

    def record(
        self,
        severity: Severity,
        reason: str,
        obj: str,
        message: str,
        *,
        node_id: str = "",
    ) -> EventRow:
        """Store an event, log it, and wake the watchers.

        A store that cannot take it (etcd without quorum) does not lose it from the
        log: it is logged with the store's error and handed to the watchers unnumbered.
        """
        log.log(_LEVELS[severity], message, extra={"reason": reason, "object": obj})
        try:
            row = self._store.add_event(
                severity=severity, reason=reason, object=obj, node_id=node_id, message=message
            )
        except StoreError as exc:
            log.warning("event not stored: %s", exc, extra={"reason": reason, "object": obj})
            row = EventRow(0, time.time(), severity, reason, obj, node_id, message)
        self._hand_out([row])
        return row

    def catch_up(self) -> None:
        """Hand the watchers what other controllers stored since (call on the loop)."""
        if self._watchers:
            self._hand_out(self._store.events(after_id=self._last_id))

    def _hand_out(self, rows: list[EventRow]) -> None:
        for row in rows:
            if row.id and row.id <= self._last_id:
                continue
            self._last_id = max(self._last_id, row.id)
            for queue in list(self._watchers):
                try:
                    queue.put_nowait(row)
                except asyncio.QueueFull:  # too slow: end its stream rather than grow memory
                    self._watchers.discard(queue)
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait(None)

    async def follow(self, after_id: int, obj: str = "") -> AsyncIterator[EventRow]:
        """Stored events after `after_id`, then new ones as they happen."""
        queue: asyncio.Queue[EventRow | None] = asyncio.Queue(WATCHER_BACKLOG)
        self._watchers.add(queue)
        try:
            last = after_id
            for row in self._store.events(after_id=after_id, object=obj or None):
                last = row.id
                yield row
            while (new := await queue.get()) is not None:
                if (new.id > last or not new.id) and (not obj or new.object == obj):
                    last = max(last, new.id)
                    yield new
        finally:
            self._watchers.discard(queue)


class LeaderEvents(EventLog):
    """What the fleet observes, stored only while this controller leads: every controller
    watches the nodes, and one record of each transition is enough. A standby logs them."""

    def __init__(self, events: EventLog, leading: Callable[[], bool]) -> None:
        super().__init__(events._store)
        self._events = events
        self._leading = leading

    def record(
        self,
        severity: Severity,
        reason: str,
        obj: str,
        message: str,
        *,
        node_id: str = "",
    ) -> EventRow:
        """Store the event while leading; otherwise only log it."""
        if self._leading():
            return self._events.record(severity, reason, obj, message, node_id=node_id)
        log.debug(message, extra={"reason": reason, "object": obj, "standby": True})
        return EventRow(0, time.time(), severity, reason, obj, node_id, message)
