"""The node's runtimes: one instance per runtime name, started on first use."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from node_agent.runtimes.base import Runtime, StateListener

RuntimeFactory = Callable[[str, StateListener], Runtime]
"""Builds the (not yet started) runtime adapter called NAME, reporting to a listener."""


class RuntimePool:
    """One runtime instance per runtime name, created and started on first use."""

    def __init__(self, factory: RuntimeFactory, listener: StateListener) -> None:
        self._factory = factory
        self._listener = listener
        self._runtimes: dict[str, Runtime] = {}
        self._starting = asyncio.Lock()

    async def get(self, name: str) -> Runtime:
        """The started runtime called `name`."""
        runtime = self._runtimes.get(name)
        if runtime is not None:
            return runtime
        async with self._starting:  # two loads must not start the same runtime twice
            runtime = self._runtimes.get(name)
            if runtime is None:
                runtime = self._factory(name, self._listener)
                await runtime.start()
                self._runtimes[name] = runtime
        return runtime

    def started(self) -> dict[str, Runtime]:
        """Runtimes started so far, by name."""
        return dict(self._runtimes)

    async def close(self) -> None:
        """Stop every runtime (their models go with them)."""
        for runtime in self._runtimes.values():
            with contextlib.suppress(Exception):
                await runtime.stop()
        self._runtimes.clear()
