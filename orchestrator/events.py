"""The event log: what happened, for people — stored, logged, and streamed to watchers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Literal

from orchestrator.store import EventRow, StateStore

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

    def record(
        self,
        severity: Severity,
        reason: str,
        obj: str,
        message: str,
        *,
        node_id: str = "",
    ) -> EventRow:
        """StateStore an event, log it, and wake the watchers."""
        row = self._store.add_event(
            severity=severity, reason=reason, object=obj, node_id=node_id, message=message
        )
        log.log(_LEVELS[severity], message, extra={"reason": reason, "object": obj})
        for queue in list(self._watchers):
            try:
                queue.put_nowait(row)
            except asyncio.QueueFull:  # too slow: end its stream rather than grow memory
                self._watchers.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)
        return row

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
                if new.id > last and (not obj or new.object == obj):
                    last = new.id
                    yield new
        finally:
            self._watchers.discard(queue)
