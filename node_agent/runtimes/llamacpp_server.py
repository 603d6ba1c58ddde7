"""One llama.cpp server child process: where the binary is, its command line, its stderr
tail, and how it stops.

The server is llama.cpp's own `llama-server` (C++), which `scripts/setup` builds
from a pinned llama.cpp source and installs next to the venv's Python. It serves
`parallel` requests at once with continuous batching, each slot with `context`
tokens of its own (`-np`, and `-c` is the total: slots times context), renders chat
templates with Jinja (`--jinja`: native tool-call formats, tool turns rendered),
and reports its load at `/slots` and `/metrics`.

The child dies with the node, even when the node is killed with SIGKILL (Linux
`PR_SET_PDEATHSIG`), and runs in its own process group so that a terminal's
Ctrl-C reaches the node, which then stops it in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import shutil
import signal
import sysconfig
from pathlib import Path

import psutil

from edgefleet_common.child_process import die_with_parent

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SERVER_NAME = "llama-server"
INSTALL_SERVER = (
    "run scripts/setup (it builds llama-server into the venv), put llama-server on PATH, "
    "or set server: /path/to/llama-server under runtimes: llama.cpp: in the node's catalog"
)
STOP_GRACE_S = 3.0
TAIL_LINES = 40
LOG_VERBOSITY = 3
"""llama.cpp's info level: load errors and the slot lines that explain a failure."""
NATIVE_CRASHES = (-signal.SIGSEGV, -signal.SIGILL, -signal.SIGBUS)


def find_server(configured: str = "") -> Path | None:
    """The `llama-server` binary: `configured` if given, else the one installed next to this
    Python (by scripts/setup), else the first on PATH; None when there is none."""
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    beside = Path(sysconfig.get_path("scripts")) / SERVER_NAME
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(SERVER_NAME)
    return Path(found) if found else None


def server_environment() -> dict[str, str]:
    """The node's environment for a server, its OpenMP threads waiting passively.

    OpenMP threads spin while they wait for work. On a small box where the node and
    other programs need a core now and then, a spinning thread holds a core the
    thread it waits for needs: measured on 2 cores with one other busy process,
    generation fell from 35 to 5 tokens/s with 2 threads. An operator's own
    `OMP_WAIT_POLICY` is kept.
    """
    return {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


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


def crash_hint(code: int) -> str:
    """What to do when the server died in native code (a build that does not fit this CPU)."""
    if code not in NATIVE_CRASHES:
        return ""
    # Seen with builds that use CPU features the host (often a VM) does not really provide.
    return (
        "; a crash in llama.cpp's native code usually means a build that does not fit this "
        "CPU: run scripts/setup on this machine (it builds for the CPU features it finds), "
        "or set ubatch: 1 under runtimes: llama.cpp: in the node's catalog"
    )


class ServerProcess:
    """One `llama-server` child: its command, its stderr tail, and how it stops."""

    def __init__(
        self,
        alias: str,
        gguf: Path,
        port: int,
        threads: int,
        context: int,
        ubatch: int = 0,
        *,
        parallel: int = 1,
        binary: Path | None = None,
    ) -> None:
        """`context` is tokens per slot (0: the model's own), `parallel` the slot count."""
        self.alias, self.gguf, self.port = alias, gguf, port
        self.parallel = parallel
        self.command = [
            str(binary or SERVER_NAME),
            "--model", str(gguf),
            "--alias", alias,
            "--host", HOST,
            "--port", str(port),
            "--threads", str(threads),
            "--parallel", str(parallel),
            "--ctx-size", str(context * parallel),
            "--jinja",
            "--metrics",
            "--slots",
            "--no-webui",
            # Prompts of finished requests stay in their slot for reuse; a RAM cache on top
            # would grow the server by up to gigabytes outside the node's memory budget.
            "--cache-ram", "0",
            # The node sizes the context itself; fitting it to free memory first loads the
            # model twice and doubles the start.
            "--fit", "off",
            "--log-colors", "off",
            "--log-verbosity", str(LOG_VERBOSITY),
        ]  # fmt: skip
        if ubatch:
            self.command += ["--ubatch-size", str(ubatch)]
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
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                process_group=0,
                env=server_environment(),
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
        """The last lines the child wrote to stderr that say what went wrong (its error
        lines; without any, its last lines), without llama.cpp's time and level prefix."""
        errors = [line for line in self._tail if _is_error(line)]
        useful = [_LOG_PREFIX.sub("", line) for line in errors or self._tail]
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


_LOG_PREFIX = re.compile(r"^[\d.]+ [DIWE] ")
"""llama.cpp's log line prefix: time since start, level."""


def _is_error(line: str) -> bool:
    if re.match(r"^[\d.]+ E ", line):
        return True
    # Before logging starts (command-line errors), lines have no prefix.
    return not _LOG_PREFIX.match(line) and any(
        word in line.lower() for word in ("error", "failed", "invalid", "abort")
    )
