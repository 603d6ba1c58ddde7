"""Models on their way out: each is unloaded once the requests still running on it are done.

A model a new desired state no longer wants leaves the node's set at once (no new
request reaches it), but the requests already on it, those of an agent that is
draining, finish first: only then is it unloaded, or after a grace period. Until
then it still holds its memory, which the budget counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node_agent.models import ModelSlot

RETIRE_GRACE_S = 30.0
"""How long a retiring model waits for its running requests (as a draining agent does)."""
_POLL_S = 0.05


class Retirements:
    """The retiring models, by alias, and the tasks that unload them."""

    def __init__(
        self, unload: Callable[[ModelSlot], Awaitable[None]], on_done: Callable[[], None]
    ) -> None:
        """`unload(slot)` unloads a model from its runtime; `on_done()` runs after each."""
        self._unload = unload
        self._on_done = on_done
        self._leaving: dict[str, tuple[ModelSlot, asyncio.Task[None]]] = {}

    def start(self, slot: ModelSlot) -> None:
        """Unload `slot` once nothing uses it any more (at the latest after the grace)."""
        alias = slot.want.alias
        if slot.task is not None:  # a retry of a load that failed under a request
            slot.task.cancel()
            slot.task = None
        task = asyncio.create_task(self._retire(slot), name=f"retire {alias}")
        self._leaving[alias] = (slot, task)

    def slots(self) -> list[ModelSlot]:
        """The retiring models (they hold memory until unloaded)."""
        return [slot for slot, _ in self._leaving.values()]

    async def take_back(self, alias: str) -> ModelSlot | None:
        """A retiring model wanted again: it stays (unloaded, if its unload had begun).
        None if it is not retiring."""
        entry = self._leaving.pop(alias, None)
        if entry is None:
            return None
        slot, task = entry
        await task  # ends at its next look, or once an unload under way is done
        return slot

    async def wait(self) -> None:
        """Until every model retiring now is unloaded."""
        tasks = [task for _, task in self._leaving.values()]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Unload every retiring model now."""
        leaving, self._leaving = list(self._leaving.values()), {}
        for slot, task in leaving:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self._unload(slot)

    def _retiring(self, slot: ModelSlot) -> bool:
        entry = self._leaving.get(slot.want.alias)
        return entry is not None and entry[0] is slot

    async def _retire(self, slot: ModelSlot) -> None:
        deadline = time.monotonic() + RETIRE_GRACE_S
        # Polled: requests end in several places, and this runs only while a model retires.
        while slot.in_use and time.monotonic() < deadline and self._retiring(slot):  # noqa: ASYNC110
            await asyncio.sleep(_POLL_S)
        if not self._retiring(slot):
            return  # taken back, or closed
        await self._unload(slot)
        if self._retiring(slot):
            del self._leaving[slot.want.alias]
        self._on_done()
