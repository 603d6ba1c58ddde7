"""How one node serves clients at once: a benchmark, not a test.

    python bench/node_serving.py [--clients 1,2,4,8] [--requests 16] [--max-tokens 64]

One real `edge-node` with SmolLM2-135M on llama.cpp's `llama-server` (its
`--parallel` slots and `--threads` from the node's catalog), and an agent on it
that offers a tool (`time`), as an assistant does. At each client count, in one
run, the same prompt goes, streamed, through three paths in turn:

* `direct` — straight to the node's llama-server (the floor);
* `model` — the node's model path (`ProxyModel` over gRPC with mutual TLS);
* `agent` — the node's agent path (`InvokeAgent`: Agent Framework, tool offered).

`clients` clients each send their next request as soon as the last one ended,
until `requests` requests are done. Figures: aggregate completion tokens per
second (the tokens every answer's `usage` reports, over the cell's wall time) and
the time to the first reply token, p50 and p90. Targets: 4 clients give at least
2x the tokens/s of 1 client; the agent path's first token is within 50 ms of the
model path's. Results go to bench/results/node_serving.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgefleet.v1 import common_pb2, node_pb2, node_pb2_grpc  # noqa: E402
from tests.integration.node_process import NodeProcess, start_node  # noqa: E402

RESULTS = REPO / "bench" / "results" / "node_serving.json"
ALIAS = "smollm2-135m"
AGENT = "assistant"
INSTRUCTIONS = "You are a helpful assistant."
PROMPT = "Tell me a short story about a lighthouse keeper."
PATHS = ("direct", "model", "agent")

Sample = tuple[float, int]
"""(seconds to the first reply token, completion tokens) of one request."""


@dataclass(frozen=True)
class Cell:
    """One path at one client count."""

    path: str
    clients: int
    requests: int
    seconds: float
    tokens: int
    tokens_per_s: float
    first_token_p50_ms: float
    first_token_p90_ms: float
    others_cpu_cores: float
    """CPU other processes of the machine used meanwhile (cores), to judge the noise."""


def catalog(path: Path, threads: int, parallel: int) -> Path:
    path.write_text(
        json.dumps({"runtimes": {"llama.cpp": {"threads": threads, "parallel": parallel}}})
    )
    return path


def desired() -> node_pb2.ApplyStateRequest:
    agent = common_pb2.AgentSpec(name=AGENT, model=ALIAS, instructions=INSTRUCTIONS, tools=["time"])
    return node_pb2.ApplyStateRequest(
        generation=1,
        controller_id="bench",
        state=node_pb2.NodeDesiredState(models=[common_pb2.ModelSpec(alias=ALIAS)], agents=[agent]),
    )


def wait_ready(node: NodeProcess, timeout: float = 120.0) -> None:
    stub = node.stub()
    for status in stub.WatchStatus(node_pb2.WatchStatusRequest(), timeout=timeout):
        agents = [a for a in status.agents if a.name == AGENT]
        if agents and agents[0].state == common_pb2.AGENT_STATE_READY:
            return
    raise RuntimeError(f"the agent did not get ready\n{node.log()}")


def server_port(node: NodeProcess) -> int:
    for server in node.runtime_servers():
        command = server.cmdline()
        return int(command[command.index("--port") + 1])
    raise RuntimeError(f"no llama-server under the node\n{node.log()}")


def chat_body(max_tokens: int) -> bytes:
    return json.dumps(
        {
            "model": ALIAS,
            "messages": [
                {"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": PROMPT},
            ],
            "max_tokens": max_tokens,
            "temperature": 0.7,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()


class SseReader:
    """Reads an OpenAI event stream as it arrives: first content, then the usage."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first: float | None = None
        self.tokens = 0
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while b"\n\n" in self._buffer:
            event, self._buffer = self._buffer.split(b"\n\n", 1)
            payload = event.removeprefix(b"data: ").strip()
            if not payload or payload == b"[DONE]":
                continue
            chunk = json.loads(payload)
            for choice in chunk.get("choices") or []:
                if self.first is None and (choice.get("delta") or {}).get("content"):
                    self.first = time.perf_counter() - self.started
            if chunk.get("usage"):
                self.tokens = int(chunk["usage"]["completion_tokens"])

    def sample(self) -> Sample:
        if self.first is None:
            raise RuntimeError("the answer had no content")
        return self.first, self.tokens


async def direct(session: aiohttp.ClientSession, port: int, body: bytes) -> Sample:
    reader = SseReader(time.perf_counter())
    async with session.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=body,
        # As the node does: llama-server may close a kept-alive connection after a streamed
        # answer just as the next request is sent on it.
        headers={"content-type": "application/json", "connection": "close"},
    ) as response:
        async for data in response.content.iter_any():
            reader.feed(data)
    return reader.sample()


async def model_path(stub: Any, body: bytes) -> Sample:
    reader = SseReader(time.perf_counter())
    request = node_pb2.ProxyModelRequest(model=ALIAS, body=body)
    async for chunk in stub.ProxyModel(request, timeout=300):
        reader.feed(chunk.data)
    return reader.sample()


async def agent_path(stub: Any, max_tokens: int) -> Sample:
    request = node_pb2.InvokeAgentRequest(
        agent=AGENT,
        messages=[common_pb2.ChatMessage(role="user", content=PROMPT)],
        options=common_pb2.GenerationOptions(max_tokens=max_tokens, temperature=0.7),
    )
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async for chunk in stub.InvokeAgent(request, timeout=300):
        if first is None and chunk.delta:
            first = time.perf_counter() - started
        if chunk.HasField("usage"):
            tokens = chunk.usage.completion_tokens
    if first is None:
        raise RuntimeError("the agent's answer had no text")
    return first, tokens


class OtherLoad:
    """CPU time the machine spent outside this benchmark's processes."""

    def __init__(self, node: NodeProcess) -> None:
        self._ours = [psutil.Process(), psutil.Process(node.pid)]

    def _times(self) -> tuple[float, float]:
        system = psutil.cpu_times()
        busy = system.user + system.system + system.nice + system.irq + system.softirq
        ours = 0.0
        for root in self._ours:
            for process in [root, *root.children(recursive=True)]:
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                ours += times.user + times.system
        return busy, ours

    def start(self) -> Callable[[float], float]:
        """A meter: called with the seconds since, the cores others used meanwhile."""
        busy, ours = self._times()

        def used(seconds: float) -> float:
            busy_now, ours_now = self._times()
            return round(max((busy_now - busy) - (ours_now - ours), 0.0) / seconds, 2)

        return used


async def cell(
    path: str,
    clients: int,
    requests: int,
    send: Callable[[], Awaitable[Sample]],
    others: OtherLoad,
) -> Cell:
    samples: list[Sample] = []
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            samples.append(await send())

    meter = others.start()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    others_cores = meter(seconds)
    firsts = sorted(first * 1000 for first, _ in samples)
    tokens = sum(count for _, count in samples)
    return Cell(
        path=path,
        clients=clients,
        requests=len(samples),
        seconds=round(seconds, 2),
        tokens=tokens,
        tokens_per_s=round(tokens / seconds, 1),
        first_token_p50_ms=round(statistics.median(firsts), 1),
        first_token_p90_ms=round(firsts[min(len(firsts) - 1, int(0.9 * len(firsts)))], 1),
        others_cpu_cores=others_cores,
    )


async def measure(node: NodeProcess, args: argparse.Namespace) -> list[Cell]:
    port = server_port(node)
    body = chat_body(args.max_tokens)
    channel = node.aio_channel()
    stub = node_pb2_grpc.NodeServiceStub(channel)
    async with aiohttp.ClientSession() as session:
        senders: dict[str, Callable[[], Awaitable[Sample]]] = {
            "direct": lambda: direct(session, port, body),
            "model": lambda: model_path(stub, body),
            "agent": lambda: agent_path(stub, args.max_tokens),
        }
        for send in senders.values():  # warm: each path's first request pays one-time costs
            await send()
        cells = []
        for clients in args.clients:
            for path in PATHS:
                requests = max(args.requests, clients)
                found = await cell(path, clients, requests, senders[path], OtherLoad(node))
                progress(found)
                cells.append(found)
    await channel.close()
    return cells


def progress(found: Cell) -> None:
    print(
        f"  {found.path:<7} {found.clients} clients: {found.tokens_per_s} tok/s, first token "
        f"p50 {found.first_token_p50_ms} ms (others used {found.others_cpu_cores} cores)",
        file=sys.stderr,
    )


def targets(cells: list[Cell]) -> dict[str, Any]:
    by = {(c.path, c.clients): c for c in cells}
    found: dict[str, Any] = {}
    for path in PATHS:
        one, four = by.get((path, 1)), by.get((path, 4))
        if one and four:
            found[f"{path}: 4 clients / 1 client tok/s"] = round(
                four.tokens_per_s / one.tokens_per_s, 2
            )
    for clients in sorted({c.clients for c in cells}):
        model, agent = by.get(("model", clients)), by.get(("agent", clients))
        if model and agent:
            found[f"agent - model first token p50 at {clients} clients (ms)"] = round(
                agent.first_token_p50_ms - model.first_token_p50_ms, 1
            )
    return found


def table(cells: list[Cell]) -> list[str]:
    lines = [
        "| path | clients | requests | tok/s (aggregate) | first token p50 | p90 | others' CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in sorted(cells, key=lambda c: (c.clients, PATHS.index(c.path))):
        lines.append(
            f"| {c.path} | {c.clients} | {c.requests} | {c.tokens_per_s} | "
            f"{c.first_token_p50_ms} ms | {c.first_token_p90_ms} ms | {c.others_cpu_cores} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4, 8]
    )
    parser.add_argument("--requests", type=int, default=16, help="requests per path and count")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=4, help="llama-server slots")
    parser.add_argument("--threads", type=int, default=2, help="llama-server threads")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefleet-serving-bench-") as tmp:
        work = Path(tmp)
        with start_node(
            "bench-node",
            work / "data",
            catalog=catalog(work / "catalog.json", args.threads, args.parallel),
        ) as node:
            node.stub().ApplyState(desired(), timeout=30)
            wait_ready(node)
            cells = asyncio.run(measure(node, args))
            node.terminate()
    report = {
        "benchmark": "node_serving",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": psutil.cpu_count(), "python": sys.version.split()[0]},
        "settings": {
            "parallel": args.parallel,
            "threads": args.threads,
            "max_tokens": args.max_tokens,
            "requests_per_cell": args.requests,
        },
        "cells": [asdict(c) for c in cells],
        "targets": targets(cells),
    }
    print("\n".join(table(cells)))
    for name, value in report["targets"].items():
        print(f"{name}: {value}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
