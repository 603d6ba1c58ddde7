"""A model the llama.cpp runtime serves: its server process and the state of its supervision."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from edgefleet_common.backoff import Backoff
from node_agent.runtimes.llamacpp_server import ServerProcess

log = logging.getLogger(__name__)

RESTART_FIRST_S = 0.5
"""The delay before the first restart of a server that exited on its own."""
RESTART_MOST_S = 30.0
"""The longest delay between restarts, and the retry interval of a `failed` model."""


def _restart_backoff() -> Backoff:
    # Read at creation, not import, so that a test can shorten the delays.
    return Backoff(RESTART_FIRST_S, RESTART_MOST_S)


@dataclass(slots=True)
class ServedModel:
    """A model this runtime serves, and the supervision of its server."""

    alias: str
    source: str
    gguf: Path
    server: ServerProcess
    """The current server; replaced by each restart (on the same port when it is free)."""
    parallel: int = 0
    """The model's own slot count (0: the runtime's), kept for restarts."""
    context: int = 0
    """The model's own tokens per slot (0: the runtime's), kept for restarts."""
    native_tool_calls: bool = False
    """Its chat template takes tools and renders tool calls (read from the server)."""
    ready: bool = False
    stopping: bool = False
    failed: bool = False
    supervisor: asyncio.Task[None] | None = None
    failures: collections.deque[float] = field(default_factory=collections.deque)
    """When the server exited on its own or failed to restart (monotonic seconds)."""
    backoff: Backoff = field(default_factory=_restart_backoff)

    @property
    def port(self) -> int:
        """The loopback port the model's server listens on."""
        return self.server.port

    def answered(self) -> None:
        """The server answers again: the model is not failed, and the next restart after
        another exit waits the shortest delay."""
        self.failed = False
        self.backoff.reset()

    async def stop(self) -> None:
        """End supervision, then stop the server (SIGTERM, SIGKILL after a grace period)."""
        self.stopping = True
        self.ready = False
        if self.supervisor is not None and self.supervisor is not asyncio.current_task():
            self.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.supervisor
        await self.server.stop()
        log.info("llama.cpp server stopped", extra={"model": self.alias, "pid": self.server.pid})
