"""Load for bench/gateway.py: wrk for throughput and latency, a Python client for first bytes.

* `run_wrk` — wrk (C, one thread, keep-alive connections) POSTs one body for a
  fixed time at a fixed concurrency; latency percentiles of whole responses and
  requests per second, non-2xx answers and socket errors counted.
* `run_clients` — asyncio clients on raw keep-alive HTTP/1.1 connections, each
  sending one request after another: time to the first byte of the body (for a
  stream: its first event) and to the end, every answer checked (status 200 and
  the expected text in the body). Bounded in count and in time. Its own CPU use
  is reported, since at high rates the client itself becomes the limit.

Everything goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psutil

REQUEST_TIMEOUT_S = 30.0
API_KEY = f"sk-{secrets.token_hex(32)}"
"""Sent as the bearer token on every request (LiteLLM's master key; the others ignore it)."""

_WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d %d %d %.0f %.0f %.0f\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status + e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""
_WRK_LINE = re.compile(r"^WRK((?: \d+){10})$", re.M)


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run."""

    requests: int
    errors: int
    """Socket errors, timeouts and non-2xx answers."""
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def per_second(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds


def wrk_version() -> str:
    """The version wrk reports, e.g. `4.1.0`."""
    done = subprocess.run(
        [wrk_binary(), "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    found = re.search(r"wrk (?:debian/)?(\S+)", done.stdout + done.stderr)
    return found.group(1) if found else "unknown"


def wrk_binary() -> str:
    """The wrk executable."""
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: run scripts/bench-setup as root")
    return found


def run_wrk(url: str, body: bytes, concurrency: int, seconds: float) -> WrkResult:
    """POST `body` to `url` from `concurrency` connections for `seconds` (one wrk thread)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as script:
        script.write(_WRK_SCRIPT.format(body=body.decode(), key=API_KEY))
        script.flush()
        argv = [
            wrk_binary(), "-t1", f"-c{concurrency}", f"-d{seconds:g}s",
            "--timeout", f"{REQUEST_TIMEOUT_S:g}s", "-s", script.name, url,
        ]  # fmt: skip
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    found = _WRK_LINE.search(done.stdout)
    if found is None:
        raise RuntimeError(f"wrk gave no summary: {done.stdout}\n{done.stderr}")
    requests, duration_us, _bytes, connect, read, write, status, p50, p99, high = (
        int(v) for v in found.group(1).split()
    )
    return WrkResult(
        requests=requests,
        errors=connect + read + write + status,
        seconds=duration_us / 1e6,
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        max_ms=high / 1000,
    )


# -- the Python client ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer as the client saw it."""

    status: int
    first_byte_s: float
    """From sending the request to the first byte of the body."""
    total_s: float
    body: bytes
    close: bool


@dataclass(slots=True)
class Outcome:
    """One request: when it started and ended (monotonic), and what went wrong, if anything."""

    started: float
    ended: float
    first_byte_s: float
    error: str = ""
    detail: str = ""
    """The start of a wrong answer's body."""


@dataclass(slots=True)
class ClientRun:
    """Everything a `run_clients` call saw."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    client_cpu_percent: float = 0.0

    @property
    def ok(self) -> list[Outcome]:
        """The requests answered correctly."""
        return [o for o in self.outcomes if not o.error]

    @property
    def failed(self) -> list[Outcome]:
        """The requests that were not."""
        return [o for o in self.outcomes if o.error]

    def errors(self) -> dict[str, int]:
        """How many requests failed, by reason."""
        return dict(Counter(o.error for o in self.failed))

    def first_byte_ms(self, quantile: float) -> float:
        """A quantile of the time to the first byte of the body, successful requests."""
        return percentile([o.first_byte_s * 1000 for o in self.ok], quantile)

    def total_ms(self, quantile: float) -> float:
        """A quantile of the time to the whole answer, successful requests."""
        return percentile([(o.ended - o.started) * 1000 for o in self.ok], quantile)

    @property
    def per_second(self) -> float:
        """Correct answers per second."""
        return len(self.ok) / self.seconds if self.seconds else 0.0


def percentile(values: list[float], quantile: float) -> float:
    """The `quantile` (0 to 1) of `values` by the nearest rank; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if quantile == 0.5:
        return statistics.median(ordered)
    return ordered[min(len(ordered) - 1, max(0, round(quantile * len(ordered)) - 1))]


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs to one URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.path = parts.path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def request(self, body: bytes) -> bytes:
        """The bytes of one POST of `body`."""
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def post(self, payload: bytes, retry_stale: bool = False) -> Reply:
        """Send a prepared request (from `request`) and read the whole answer.

        With `retry_stale`, a reused connection that the server had closed while idle
        (no byte of an answer came back) is opened again and the request sent once more,
        as HTTP clients do; load runs leave it off, so a proxy that drops connections
        shows up as failures.
        """
        reused = self._writer is not None
        try:
            return await self._exchange(payload)
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
            partial = getattr(exc, "partial", b"")
            if not (retry_stale and reused and not partial):
                raise
            await self.close()
            return await self._exchange(payload)

    async def _exchange(self, payload: bytes) -> Reply:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        assert reader is not None
        start = time.perf_counter()
        writer.write(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        body = bytearray()
        first = 0.0
        if b"content-length" in headers:
            length = int(headers[b"content-length"])
            if length:
                body += await reader.read(length)
                first = time.perf_counter()
                body += await reader.readexactly(length - len(body))
        elif headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                body += await reader.readexactly(size)
                first = first or time.perf_counter()
                await reader.readexactly(2)
        else:  # the body ends with the connection
            body += await reader.read()
            first = time.perf_counter()
            headers[b"connection"] = b"close"
        end = time.perf_counter()
        close = headers.get(b"connection") == b"close"
        if close:
            await self.close()
        return Reply(status, (first or end) - start, end - start, bytes(body), close)

    async def close(self) -> None:
        """Close the connection (it is opened again by the next `post`)."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


Check = Callable[[Reply], str]
"""What is wrong with an answer, or '' when it is right."""


def expect_text(text: bytes) -> Check:
    """Right when the status is 200 and `text` is in the body."""

    def check(reply: Reply) -> str:
        if reply.status != 200:
            return f"HTTP {reply.status}"
        return "" if text in reply.body else "unexpected body"

    return check


async def _client(
    url: str,
    body: bytes,
    check: Check,
    end_at: float,
    budget: list[int],
    found: list[Outcome],
) -> None:
    connection = Connection(url)
    payload = connection.request(body)
    try:
        while time.monotonic() < end_at and budget[0] > 0:
            budget[0] -= 1
            started = time.monotonic()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    reply = await connection.post(payload)
                problem = check(reply)
                first = reply.first_byte_s
                detail = reply.body[:300].decode(errors="replace") if problem else ""
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                problem, first, detail = type(exc).__name__, 0.0, str(exc)
                await connection.close()
            except TimeoutError:
                problem, first, detail = "timeout", 0.0, ""
                await connection.close()
            found.append(Outcome(started, time.monotonic(), first, problem, detail))
    finally:
        await connection.close()


async def clients(
    url: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    max_requests: int,
    check: Check,
    during: Callable[[], None] | None = None,
    during_at: float = 0.0,
) -> ClientRun:
    """`concurrency` clients POST `body` to `url` until `seconds` pass or `max_requests`
    were sent; `during`, if given, runs once `during_at` seconds in (in a thread)."""
    found: list[Outcome] = []
    budget = [max_requests]
    me = psutil.Process()
    cpu = me.cpu_times()
    start = time.monotonic()
    end_at = start + seconds
    tasks = [
        asyncio.create_task(_client(url, body, check, end_at, budget, found))
        for _ in range(concurrency)
    ]
    if during is not None:
        await asyncio.sleep(during_at)
        await asyncio.to_thread(during)
    await asyncio.gather(*tasks)
    wall = time.monotonic() - start
    used = me.cpu_times()
    busy = (used.user - cpu.user) + (used.system - cpu.system)
    return ClientRun(found, wall, 100 * busy / wall)


def run_clients(
    url: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    max_requests: int,
    check: Check,
    during: Callable[[], None] | None = None,
    during_at: float = 0.0,
) -> ClientRun:
    """`clients` on a fresh event loop."""
    return asyncio.run(
        clients(url, body, concurrency, seconds, max_requests, check, during, during_at)
    )


def chat_body(model: str, stream: bool, max_tokens: int = 8, prompt: str = "Say hello.") -> bytes:
    """An OpenAI chat-completions request body."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def _interleaved(
    routes: dict[str, tuple[str, bytes]], rounds: int, check: Check
) -> dict[str, list[Outcome]]:
    connections = {name: Connection(url) for name, (url, _) in routes.items()}
    payloads = {name: connections[name].request(body) for name, (_, body) in routes.items()}
    found: dict[str, list[Outcome]] = {name: [] for name in routes}
    try:
        for round_ in range(rounds + 1):  # round 0 warms each route up and is not kept
            for name, connection in connections.items():
                started = time.monotonic()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_S * 4):
                        reply = await connection.post(payloads[name], retry_stale=True)
                    outcome = Outcome(started, time.monotonic(), reply.first_byte_s, check(reply))
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    await connection.close()
                    outcome = Outcome(started, time.monotonic(), 0.0, type(exc).__name__)
                if round_:
                    found[name].append(outcome)
    finally:
        for connection in connections.values():
            await connection.close()
    return found


def run_interleaved(
    routes: dict[str, tuple[str, bytes]], rounds: int, check: Check
) -> dict[str, list[Outcome]]:
    """One request at a time to each route in turn (`routes`: name → URL and body), for
    `rounds` rounds after a warm-up round; a slow server sees every route alike."""
    return asyncio.run(_interleaved(routes, rounds, check))
