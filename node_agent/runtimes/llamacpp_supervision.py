"""Keeping each model's llama.cpp server running.

A server that exits on its own is started again after a delay that doubles with
each start that fails, from `RESTART_FIRST_S` up to `RESTART_MOST_S`, and starts
over once a server answers. The runtime's listener hears `loading`, then `ready`
once the server answers again; after `FAILURES_BEFORE_FAILED` failures (exits and
failed starts) within `FAILURE_WINDOW_S` it hears `failed` (once), and restarts go
on every `RESTART_MOST_S` until one answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from node_agent.errors import ModelLoadError
from node_agent.runtimes.base import LoadedState
from node_agent.runtimes.llamacpp_served import ServedModel
from node_agent.runtimes.llamacpp_server import crash_hint, describe_exit
from node_agent.runtimes.llamacpp_startup import ServerStarter

log = logging.getLogger(__name__)

FAILURE_WINDOW_S = 120.0
FAILURES_BEFORE_FAILED = 5

Tell = Callable[[str, LoadedState, str], None]
"""Reports a model's new state and why: (alias, state, reason); must not raise."""


class Supervisor:
    """Restarts a model's server whenever it exits on its own, and tells the listener."""

    def __init__(self, starter: ServerStarter, tell: Tell) -> None:
        self._starter = starter
        self._tell = tell

    def watch(self, model: ServedModel) -> None:
        """Start supervising a model whose server answers; `model.stop()` ends it."""
        model.supervisor = asyncio.create_task(
            self._supervise(model), name=f"supervise {model.alias}"
        )

    async def _supervise(self, model: ServedModel) -> None:
        try:
            await self._watch(model)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave the model silently dead
            log.exception("llama.cpp supervision failed", extra={"model": model.alias})
            model.ready = False
            self._tell(model.alias, "failed", f"supervision of the llama.cpp server failed: {exc}")

    async def _watch(self, model: ServedModel) -> None:
        while not model.stopping:
            code = await model.server.wait()
            if model.stopping:
                return
            model.ready = False
            reason = (
                f"llama.cpp server for model `{model.alias}` stopped on its own "
                f"({describe_exit(code)}): {model.server.summary()}{crash_hint(code)}"
            )
            log.warning(
                "llama.cpp server stopped; restarting it",
                extra={"model": model.alias, "pid": model.server.pid, "exit": describe_exit(code)},
            )
            self._tell(model.alias, "loading", f"{reason}; restarting it")
            await self._restart(model, reason)
            model.ready = True
            log.info("llama.cpp server restarted", extra={"model": model.alias, "port": model.port})
            self._tell(model.alias, "ready", "")

    async def _restart(self, model: ServedModel, reason: str) -> None:
        """Start the server again with backoff until it answers (never gives up)."""
        while True:
            delay, count = next_restart(model, time.monotonic())
            if count >= FAILURES_BEFORE_FAILED and not model.failed:
                model.failed = True
                self._tell(
                    model.alias,
                    "failed",
                    f"{reason}; it failed {count} times in {FAILURE_WINDOW_S:.0f}s, still "
                    f"retrying every {delay:.0f}s (see the node's log)",
                )
            await asyncio.sleep(delay)
            try:
                model.server = self._starter.server(
                    model.alias, model.gguf, model.port, model.parallel, model.context
                )
                # The listener hears `loading` and then `ready`, not the steps between.
                await self._starter.start(model, lambda _: None)
            except (ModelLoadError, OSError) as exc:
                reason = str(exc)
                log.warning(
                    "llama.cpp server restart failed",
                    extra={"model": model.alias, "error": reason, "after_s": delay},
                )
                continue
            model.answered()
            return


def next_restart(model: ServedModel, now: float) -> tuple[float, int]:
    """Count a failure of the model's server at `now` (monotonic seconds).

    Returns the delay before the next start and the failures within the window; from
    `FAILURES_BEFORE_FAILED` on, the delay is the longest one.
    """
    model.failures.append(now)
    while model.failures and model.failures[0] < now - FAILURE_WINDOW_S:
        model.failures.popleft()
    count = len(model.failures)
    if count >= FAILURES_BEFORE_FAILED:
        return model.backoff.most, count
    return model.backoff.next(), count
