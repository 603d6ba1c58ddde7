"""Models on this node: loading, readiness, memory budget, idle unload, LRU eviction.

The manager is told which models the node should have (`reconcile`, or `add`
then `retire` around a change of agents) and works towards that in the
background. A model's state is one of pending, loading, ready, unloading,
failed. A wanted model that was unloaded because it sat idle, or was evicted
to make room, goes back to `pending` and loads again on the next request that
needs it. A model no longer wanted leaves once its running requests are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import psutil

from edgefleet_contract.desired import ModelWant, NodeLimits
from node_agent.catalog import Catalog
from node_agent.errors import ModelLoadError, NodeError, NotFound, RuntimeUnavailable, UnknownModel
from node_agent.metrics import NodeMetrics
from node_agent.model_fetch import ModelFetcher, PinnedMismatch
from node_agent.model_retirement import Retirements
from node_agent.model_slot import ModelSlot, ModelState
from node_agent.runtime_pool import RuntimeFactory, RuntimePool
from node_agent.runtimes.base import (
    LoadedState,
    LoadProgress,
    ModelEndpoint,
    Runtime,
)

__all__ = ["RETRY_DELAYS", "ModelManager", "ModelSlot", "ModelState"]

log = logging.getLogger(__name__)

RETRY_DELAYS = (2.0, 5.0, 15.0, 30.0, 60.0)


class ModelManager:
    """Drives the node's models towards the wanted set; serves their base URLs."""

    def __init__(
        self,
        catalog: Catalog,
        runtime_factory: RuntimeFactory,
        metrics: NodeMetrics,
        on_change: Callable[[], None],
        fetcher: ModelFetcher | None = None,
    ) -> None:
        """`fetcher`: makes remote sources local files (None: only local sources load)."""
        self._catalog = catalog
        self._fetcher = fetcher
        self._runtimes = RuntimePool(runtime_factory, self._runtime_event)
        self._metrics = metrics
        self._on_change = on_change
        self._slots: dict[str, ModelSlot] = {}
        self._unstarted: set[str] = set()
        """Models `add` put in the set, to load once `retire` made room."""
        self._retirements = Retirements(self._unload, self._changed)
        self._limits = NodeLimits()
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._change = asyncio.Event()
        """Set (and replaced) on every change of a model's state."""

    # -- desired state ---------------------------------------------------------------

    async def reconcile(self, wants: Sequence[ModelWant], limits: NodeLimits) -> None:
        """Make `wants` the set of models to have; loads and unloads run in the background."""
        await self.add(wants, limits)
        await self.retire(wants)

    async def add(self, wants: Sequence[ModelWant], limits: NodeLimits) -> None:
        """Make each model in `wants` part of the set as it is wanted now: a new one is
        pending (it loads after `retire`, or on a first request), a changed one reloads.
        Models not in `wants` stay until `retire`."""
        self._limits = limits
        for want in wants:
            alias = want.alias
            returning = await self._retirements.take_back(alias)
            if returning is not None:
                self._slots[alias] = returning
                self._unstarted.add(alias)  # loads again if its unload had begun
            slot = self._slots.get(alias)
            if slot is not None and slot.want.same_model(want):
                slot.want = want  # new peers to fetch from, the model as it is
                continue
            if slot is not None:  # source or runtime changed: reload
                await self._remove(alias)
            self._slots[alias] = ModelSlot(want=want)
            self._unstarted.add(alias)
        self._changed()

    async def retire(self, wants: Sequence[ModelWant]) -> None:
        """Retire the models not in `wants`, then start loading the wanted ones added since.

        A retired model leaves the set at once; one still serving requests (a draining
        agent's) is unloaded once they are done (see `Retirements`). Loads start after:
        what leaves frees its memory first, as the budget expects.
        """
        wanted = {w.alias for w in wants}
        for alias in [a for a in self._slots if a not in wanted]:
            if self._slots[alias].in_use:
                self._retirements.start(self._slots.pop(alias))
            else:
                await self._remove(alias)
        for alias in sorted(self._unstarted):
            slot = self._slots.get(alias)
            if slot is not None and slot.state == "pending" and slot.task is None:
                self._start_load(alias)
        self._unstarted.clear()
        self._changed()
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_idle())

    def slots(self) -> list[ModelSlot]:
        """Every wanted model, in alias order."""
        return [self._slots[a] for a in sorted(self._slots)]

    def state(self, alias: str) -> ModelState | None:
        """The state of a wanted model, or None if it is not wanted here."""
        slot = self._slots.get(alias)
        return slot.state if slot else None

    # -- serving ---------------------------------------------------------------------

    def slot(self, alias: str) -> ModelSlot | None:
        """The wanted model called `alias`, if any."""
        return self._slots.get(alias)

    async def load_now(self, alias: str) -> ModelSlot:
        """Start loading a wanted model that is not loaded (e.g. after an idle unload)."""
        slot = self._slots.get(alias)
        if slot is None:
            raise NotFound(f"model `{alias}` is not in this node's desired state")
        if slot.state in ("pending", "failed") and slot.task is None:
            self._start_load(alias)
        return slot

    async def unload_now(self, alias: str) -> ModelSlot:
        """Unload a loaded model now; it stays wanted and loads on the next request."""
        slot = self._slots.get(alias)
        if slot is None:
            raise NotFound(f"model `{alias}` is not in this node's desired state")
        if slot.in_use:
            raise RuntimeUnavailable(
                f"model `{alias}` is serving {slot.in_use} request(s); unload it when idle"
            )
        if slot.task is not None:
            slot.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await slot.task
            slot.task = None
        await self._unload(slot)
        slot.reason = "unloaded on request; loads on the next request"
        self._changed()
        return slot

    @contextlib.asynccontextmanager
    async def use(self, alias: str, timeout: float) -> AsyncIterator[ModelEndpoint]:
        """Hold a model in use for one request; yields where to send it.

        Loads a wanted model that was unloaded for idleness; waits up to `timeout`
        for a model that is loading.
        """
        slot = self._slots.get(alias)
        if slot is None:
            raise NotFound(f"model `{alias}` is not on this node")
        if slot.state == "failed":
            raise RuntimeUnavailable(f"model `{alias}` failed: {slot.reason}")
        if slot.state == "pending" and slot.task is None:
            self._start_load(alias)
        if slot.state != "ready" and timeout <= 0:
            raise RuntimeUnavailable(f"model `{alias}` is {slot.state}, not ready")
        slot = await self._until_ready(alias, timeout)
        runtime = await self._runtimes.get(slot.runtime)
        slot.in_use += 1
        slot.last_used = time.monotonic()
        try:
            yield runtime.endpoint(alias)
        finally:
            slot.in_use -= 1
            slot.last_used = time.monotonic()

    async def _until_ready(self, alias: str, timeout: float) -> ModelSlot:
        """The model once it is ready. RuntimeUnavailable as soon as it fails (a request must
        not wait out its deadline for a model that will not come), or after `timeout`;
        NotFound if it is removed meanwhile. Unloaded meanwhile, it loads again."""
        deadline = time.monotonic() + timeout
        while True:
            slot = self._slots.get(alias)
            if slot is None:
                raise NotFound(f"model `{alias}` was removed from this node")
            if slot.ready.is_set():
                return slot
            if slot.state == "failed":
                raise RuntimeUnavailable(f"model `{alias}` failed: {slot.reason}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeUnavailable(
                    f"model `{alias}` is {slot.state}, not ready within {timeout:.0f}s"
                )
            if slot.state == "pending" and slot.task is None:
                self._start_load(alias)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._change.wait(), left)

    def started_runtimes(self) -> dict[str, Runtime]:
        """Runtimes started so far, by name."""
        return self._runtimes.started()

    def parallel_requests(self, alias: str) -> int | None:
        """How many requests the model serves at once, as its runtime says (None: no limit)."""
        slot = self._slots.get(alias)
        runtime = self._runtimes.started().get(slot.runtime) if slot and slot.runtime else None
        return runtime.slots(alias) if runtime is not None else None

    def _runtime_event(self, alias: str, state: LoadedState, reason: str) -> None:
        """A runtime reports that a loaded model changed on its own (e.g. a crash)."""
        slot = self._slots.get(alias)
        if slot is None or slot.state in ("pending", "unloading") or slot.task is not None:
            return  # not ours to follow: unloaded, or a load of ours is under way
        log.warning(
            "model changed state in its runtime",
            extra={"model": alias, "state": state, "reason": reason},
        )
        slot.state, slot.reason = state, reason
        if state == "ready":
            slot.ready.set()
            slot.reason = ""
        else:
            slot.ready.clear()
        self._changed()

    async def runtime_for(self, alias: str) -> Runtime:
        """The runtime serving a model (for per-runtime request handling)."""
        slot = self._slots.get(alias)
        if slot is None or not slot.runtime:
            raise NotFound(f"model `{alias}` is not on this node")
        return await self._runtimes.get(slot.runtime)

    async def memory_used(self) -> int:
        """Bytes used by every started runtime."""
        total = 0
        for runtime in self._runtimes.started().values():
            with contextlib.suppress(Exception):
                total += await runtime.memory_used()
        return total

    async def close(self) -> None:
        """Unload everything and stop the runtimes."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self._retirements.close()
        for alias in list(self._slots):
            await self._remove(alias)
        await self._runtimes.close()

    # -- loading ---------------------------------------------------------------------

    def _start_load(self, alias: str) -> None:
        slot = self._slots[alias]
        slot.task = asyncio.create_task(self._load(slot), name=f"load {alias}")

    async def _load(self, slot: ModelSlot) -> None:
        alias = slot.want.alias
        try:
            source = self._catalog.resolve(slot.want)
        except UnknownModel as exc:
            self._fail(slot, str(exc))
            return
        slot.source, slot.runtime = source, source.runtime
        slot.state, slot.reason, slot.progress = "loading", "", 0.0
        self._changed()
        started = time.monotonic()
        say = lambda text: self._progress(slot, LoadProgress(text))  # noqa: E731
        try:
            if self._fetcher is not None:
                source = slot.source = await self._fetcher.prepare(
                    slot.want, source, slot.delivery, say
                )
            runtime = await self._runtimes.get(source.runtime)
            await self._make_room(slot)
            loaded = await runtime.load(source, lambda p: self._progress(slot, p))
        except asyncio.CancelledError:
            raise
        except (NodeError, OSError) as exc:
            self._fail(slot, str(exc), retry=not isinstance(exc, UnknownModel | PinnedMismatch))
            return
        except Exception as exc:  # a runtime bug must not kill the node
            log.exception("unexpected error loading a model", extra={"model": alias})
            self._fail(slot, f"unexpected error: {exc}", retry=True)
            return
        slot.memory_bytes = loaded.memory_bytes or source.memory_bytes
        slot.state, slot.reason, slot.progress, slot.failures = "ready", "", 1.0, 0
        slot.last_used = time.monotonic()
        slot.task = None
        slot.ready.set()
        self._metrics.model_load.labels(alias).observe(time.monotonic() - started)
        log.info(
            "model ready",
            extra={
                "model": alias,
                "runtime": source.runtime,
                "seconds": time.monotonic() - started,
            },
        )
        self._changed()

    def _progress(self, slot: ModelSlot, progress: LoadProgress) -> None:
        if progress.fraction is not None:
            slot.progress = progress.fraction
        slot.reason = progress.message
        self._changed()

    def _fail(self, slot: ModelSlot, reason: str, *, retry: bool = False) -> None:
        slot.state, slot.reason, slot.task = "failed", reason, None
        slot.counted = False
        self._release(slot)
        slot.ready.clear()
        slot.failures += 1
        log.warning("model failed", extra={"model": slot.want.alias, "reason": reason})
        self._changed()
        if retry:
            delay = RETRY_DELAYS[min(slot.failures, len(RETRY_DELAYS)) - 1]
            slot.task = asyncio.create_task(self._retry(slot, delay))

    async def _retry(self, slot: ModelSlot, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._slots.get(slot.want.alias) is slot and slot.state == "failed":
            slot.task = None
            self._start_load(slot.want.alias)

    async def _remove(self, alias: str) -> None:
        slot = self._slots.pop(alias, None)
        if slot is None:
            return
        if slot.task is not None and slot.task is not asyncio.current_task():
            slot.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await slot.task
        await self._unload(slot)
        self._changed()

    async def _unload(self, slot: ModelSlot) -> None:
        # `failed` too: a runtime that reported a model failed may still be restarting it,
        # and only an unload makes it stop. Unloading what a runtime does not have is a no-op.
        if not slot.runtime or slot.state in ("pending", "unloading"):
            return
        slot.state = "unloading"
        slot.ready.clear()
        self._changed()
        try:
            runtime = await self._runtimes.get(slot.runtime)
            await runtime.unload(slot.want.alias)
        except (NodeError, OSError) as exc:
            log.warning("unload failed", extra={"model": slot.want.alias, "error": str(exc)})
        slot.state, slot.memory_bytes, slot.progress = "pending", 0, 0.0
        slot.counted = False
        self._release(slot)

    def _release(self, slot: ModelSlot) -> None:
        if self._fetcher is not None:
            self._fetcher.release(slot.delivery)

    # -- memory ----------------------------------------------------------------------

    def _budget(self) -> int:
        return self._limits.memory_budget(psutil.virtual_memory().total)

    async def _make_room(self, incoming: ModelSlot) -> None:
        """Evict idle models, least recently used first, until `incoming` fits the budget.

        Models still loading count with what they are expected to take, so loads that
        start together cannot overshoot the budget between them.
        """
        async with self._lock:
            budget = self._budget()
            if not budget:
                incoming.counted = True
                return
            need = incoming.expected_bytes()
            if self._retirements.slots() and self._counted_bytes(incoming) + need > budget:
                # Retiring models free their memory once their last requests are done
                # (bounded by a grace period): wait for that rather than evict or fail.
                await self._retirements.wait()
            others = [s for s in self._slots.values() if s.counted and s is not incoming]
            used = self._counted_bytes(incoming)
            idle = [s for s in others if s.state == "ready" and not s.in_use]
            for victim in sorted(idle, key=lambda s: s.last_used):
                if used + need <= budget:
                    break
                log.info(
                    "evicting idle model to make room",
                    extra={"model": victim.want.alias, "for": incoming.want.alias},
                )
                freed = victim.expected_bytes()  # read first: unloading zeroes it
                await self._unload(victim)
                victim.reason = f"evicted to make room for {incoming.want.alias}"
                used -= freed
                self._changed()
            if used + need > budget:
                raise ModelLoadError(
                    f"model `{incoming.want.alias}` needs {need} bytes but only "
                    f"{max(budget - used, 0)} of the {budget}-byte budget are free and the rest "
                    "is in use; raise resources.max_memory_usage or model_cache_size"
                )
            incoming.counted = True

    def _counted_bytes(self, incoming: ModelSlot) -> int:
        """Memory the models other than `incoming` hold or may take, retiring ones too."""
        counted = [*self._slots.values(), *self._retirements.slots()]
        return sum(s.expected_bytes() for s in counted if s.counted and s is not incoming)

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self._limits.idle_timeout_s / 2))
            if not self._limits.auto_unload_idle_models:
                continue
            now = time.monotonic()
            for slot in list(self._slots.values()):
                idle = now - slot.last_used
                if slot.state == "ready" and not slot.in_use and idle > self._limits.idle_timeout_s:
                    log.info("unloading idle model", extra={"model": slot.want.alias})
                    await self._unload(slot)
                    slot.reason = f"unloaded after {idle:.0f}s idle; loads on next request"
                    self._changed()

    def _changed(self) -> None:
        ready = sum(1 for s in self._slots.values() if s.state == "ready")
        self._metrics.models_ready.set(ready)
        self._change.set()
        self._change = asyncio.Event()
        self._on_change()
