"""Starting a model's llama.cpp server and waiting until it answers.

Ready means `GET /health` answers 200 (503 while the model loads) and `/v1/models`
names the model's alias: a port taken by some other server does not pass for ours.
A port is picked free but may be taken before the server binds it; the server then
starts again on another port, a few times.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from edgefleet_common.ports import free_port
from node_agent.errors import ModelLoadError
from node_agent.runtimes.base import LoadProgress, ProgressCallback
from node_agent.runtimes.llamacpp_served import ServedModel
from node_agent.runtimes.llamacpp_server import (
    HOST,
    INSTALL_SERVER,
    ServerProcess,
    describe_exit,
    find_server,
)

POLL_INTERVAL_S = 0.1
PORT_ATTEMPTS = 3
_PROBE = aiohttp.ClientTimeout(total=2.0)


class _PortTaken(ModelLoadError):
    """The server could not bind its port (someone took it after we picked it)."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How a model's server runs: threads, slots, tokens per slot, micro-batch, binary."""

    threads: int
    parallel: int
    context: int
    ubatch: int = 0
    binary: str = ""
    """The `llama-server` to run; empty: the one next to this Python, else on PATH."""


class ServerStarter:
    """Starts model servers with the runtime's settings and waits until they answer."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        start_timeout: float,
        client: Callable[[], aiohttp.ClientSession],
    ) -> None:
        """`client` gives the HTTP session that asks a server whether it answers."""
        self.settings = settings
        self._start_timeout = start_timeout
        self._client = client

    def server(
        self, alias: str, gguf: Path, port: int, parallel: int = 0, context: int = 0
    ) -> ServerProcess:
        """A server for the model on `port`, not started yet; `parallel` and `context`
        override the runtime's settings for this model (0: the runtime's)."""
        binary = find_server(self.settings.binary)
        if binary is None:
            raise ModelLoadError(
                f"model `{alias}` needs llama.cpp's llama-server, which is not installed on "
                f"this node ({self.settings.binary or 'not next to this Python, not on PATH'}); "
                f"{INSTALL_SERVER}"
            )
        return ServerProcess(
            alias,
            gguf,
            port,
            self.settings.threads,
            context or self.settings.context,
            self.settings.ubatch,
            parallel=parallel or self.settings.parallel,
            binary=binary,
        )

    async def start(self, model: ServedModel, progress: ProgressCallback) -> None:
        """Spawn the model's server and wait until it answers, on a new port if its is taken."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            server = model.server
            progress(
                LoadProgress(
                    f"starting llama.cpp server for {model.gguf.name} on port {model.port}", 0.1
                )
            )
            await server.spawn()
            try:
                await self._wait_ready(server, progress)
                return
            except _PortTaken:
                if attempt == PORT_ATTEMPTS:
                    raise
                model.server = self.server(
                    model.alias, model.gguf, free_port(), model.parallel, model.context
                )
            except BaseException:
                await server.stop(grace=0)
                raise

    async def _wait_ready(self, server: ServerProcess, progress: ProgressCallback) -> None:
        deadline = time.monotonic() + self._start_timeout
        told = False
        while True:
            if server.returncode is not None:
                code = await server.wait()
                raise _start_failed(server, describe_exit(code))
            if await self._answers(server):
                return
            if not told:
                progress(LoadProgress("waiting for the server to answer", 0.3))
                told = True
            if time.monotonic() > deadline:
                await server.stop()
                raise ModelLoadError(
                    f"llama.cpp server for model `{server.alias}` did not answer within "
                    f"{self._start_timeout:.0f}s ({server.gguf}); last output: "
                    f"{server.summary()}; raise start_timeout under runtimes: llama.cpp: in the "
                    "node's catalog if the model is large or the disk slow"
                )
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _answers(self, server: ServerProcess) -> bool:
        base = f"http://{HOST}:{server.port}"
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with self._client().get(f"{base}/health", timeout=_PROBE) as health:
                if health.status != 200:
                    return False  # 503 while the model loads
            async with self._client().get(f"{base}/v1/models", timeout=_PROBE) as models:
                listed = await models.json() if models.status == 200 else {}
                return any(m.get("id") == server.alias for m in listed.get("data", []))
        return False


def _start_failed(server: ServerProcess, how: str) -> ModelLoadError:
    """The error for a server that exited before it answered, with what to do about it."""
    output = server.output()
    if "couldn't bind" in output or "address already in use" in output.lower():
        return _PortTaken(
            f"llama.cpp server for model `{server.alias}` could not listen on port "
            f"{server.port}: another program took it ({PORT_ATTEMPTS} ports tried)"
        )
    hint = ""
    if "failed to load model" in output.lower():
        hint = "; check that the file is a GGUF model that this llama.cpp build can load"
    return ModelLoadError(
        f"llama.cpp server for model `{server.alias}` stopped while starting ({how}) with "
        f"{server.gguf}: {server.summary()}{hint}"
    )
