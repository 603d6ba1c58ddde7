"""What an edge-node costs and adds: a benchmark, not a test.

    python bench/node_footprint.py [--loads 5] [--requests 20]

On one real `edge-node` process with the llama.cpp runtime and SmolLM2-135M:

* node RSS — the daemon alone, idle, before any model (its model servers are
  separate processes, measured on their own once loaded), and where it goes: the
  daemon's memory mappings with the most resident memory (anonymous memory and
  heap are Python's objects; the rest are shared libraries of the modules loaded);
* model cold load — LoadModel on the node until the model is ready: spawning
  llama-server, mapping the GGUF, the first health answer. Repeated after an
  unload, min/median/max;
* first-token latency, side by side in one run, requests interleaved:
  `direct` (streamed chat completion to the node's llama-server itself),
  `node model path` (ProxyModel over gRPC: the path a request for a model alias
  takes) and `node agent path` (InvokeAgent: Agent Framework's agent with its
  instructions, then the same server). Same prompt, max_tokens 8, temperature 0.

Everything runs on loopback. Results go to bench/results/node_footprint.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgefleet.v1 import common_pb2, node_pb2  # noqa: E402
from tests.integration.node_process import NodeProcess, start_node  # noqa: E402

RESULTS = REPO / "bench" / "results" / "node_footprint.json"
ALIAS = "smollm2-135m"
AGENT = "bench"
PROMPT = "Name three colours."
INSTRUCTIONS = "Answer briefly."
"""The agent's instructions; the direct and model paths send them as the system message,
so all three paths send the same prompt (and hit the server's prompt cache alike)."""
MAX_TOKENS = 8
_CONTENT = re.compile(rb'"content":\s*"[^"]')


def desired(generation: int) -> node_pb2.ApplyStateRequest:
    """SmolLM2 and one agent on it."""
    agents = [common_pb2.AgentSpec(name=AGENT, model=ALIAS, instructions=INSTRUCTIONS)]
    return node_pb2.ApplyStateRequest(
        generation=generation,
        controller_id="bench",
        state=node_pb2.NodeDesiredState(models=[common_pb2.ModelSpec(alias=ALIAS)], agents=agents),
    )


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "min": round(ordered[0], 2),
        "median": round(statistics.median(ordered), 2),
        "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
        "max": round(ordered[-1], 2),
    }


def wait_model(node: NodeProcess, state: int, timeout: float = 60.0) -> None:
    stub = node.stub()
    deadline = time.monotonic() + timeout
    for status in stub.WatchStatus(node_pb2.WatchStatusRequest(), timeout=timeout):
        if any(m.alias == ALIAS and m.state == state for m in status.models):
            return
        if time.monotonic() > deadline:
            break
    raise RuntimeError(f"model not in state {state} within {timeout}s\n{node.log()}")


def cold_loads(node: NodeProcess, count: int) -> list[float]:
    """LoadModel until ready, `count` times, unloading in between (ms)."""
    stub = node.stub()
    times: list[float] = []
    for _ in range(count):
        for _progress in stub.UnloadModel(node_pb2.UnloadModelRequest(alias=ALIAS), timeout=60):
            pass
        start = time.perf_counter()
        last = None
        for progress in stub.LoadModel(node_pb2.LoadModelRequest(alias=ALIAS), timeout=120):
            last = progress
        if last is None or last.state != common_pb2.MODEL_STATE_READY:
            raise RuntimeError(f"load ended in {last}\n{node.log()}")
        times.append((time.perf_counter() - start) * 1000)
    return times


def model_server_port(node: NodeProcess) -> int:
    for server in node.runtime_servers():
        command = server.cmdline()
        return int(command[command.index("--port") + 1])
    raise RuntimeError("no llama-server found under the node")


def body() -> dict[str, Any]:
    return {
        "model": ALIAS,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": PROMPT},
        ],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
    }


def ttft_direct(client: httpx.Client, port: int) -> float:
    start = time.perf_counter()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    first = None
    # As the node does: llama-server may close a kept-alive connection after a stream.
    with client.stream("POST", url, json=body(), headers={"connection": "close"}) as response:
        for data in response.iter_raw():
            if first is None and _CONTENT.search(data):
                first = time.perf_counter()
    if first is None:
        raise RuntimeError("no content from the model server")
    return (first - start) * 1000


def ttft_proxy(node: NodeProcess, stub: Any) -> float:
    request = node_pb2.ProxyModelRequest(model=ALIAS, body=json.dumps(body()).encode())
    start = time.perf_counter()
    first = None
    for chunk in stub.ProxyModel(request, timeout=60):
        if first is None and _CONTENT.search(chunk.data):
            first = time.perf_counter()
    if first is None:
        raise RuntimeError(f"no content through ProxyModel\n{node.log()}")
    return (first - start) * 1000


def ttft_agent(node: NodeProcess, stub: Any) -> float:
    request = node_pb2.InvokeAgentRequest(
        agent=AGENT,
        messages=[common_pb2.ChatMessage(role="user", content=PROMPT)],
        options=common_pb2.GenerationOptions(max_tokens=MAX_TOKENS, temperature=0.0, seed=1),
    )
    start = time.perf_counter()
    first = None
    for chunk in stub.InvokeAgent(request, timeout=60):
        if first is None and chunk.delta:
            first = time.perf_counter()
    if first is None:
        raise RuntimeError(f"no reply text through InvokeAgent\n{node.log()}")
    return (first - start) * 1000


def memory_map(pid: int, top: int = 8) -> list[tuple[str, float]]:
    """The process's mappings with the most resident memory: (name, MiB), largest first."""
    sizes: dict[str, int] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
        if head:
            name = Path(head.group(1)).name if head.group(1).startswith("/") else head.group(1)
            name = name or "[anonymous]"
        elif line.startswith("Rss:"):
            sizes[name] = sizes.get(name, 0) + int(line.split()[1])
    ordered = sorted(sizes.items(), key=lambda item: -item[1])[:top]
    return [(mapping, round(kib / 1024, 1)) for mapping, kib in ordered]


def interleaved(paths: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {name: [] for name in paths}
    for measure in paths.values():
        measure()  # warm: the first request of each path pays one-time costs
    for _ in range(rounds):
        for name, measure in paths.items():
            found[name].append(measure())
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=5, help="cold loads to time")
    parser.add_argument("--requests", type=int, default=20, help="requests per path")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="edgefleet-node-bench-") as tmp,
        start_node("bench-node", Path(tmp) / "data") as node,
    ):
        time.sleep(2.0)
        idle_rss = node.rss()
        idle_map = memory_map(node.pid)
        stub = node.stub()
        stub.ApplyState(desired(1), timeout=30)
        wait_model(node, common_pb2.MODEL_STATE_READY)
        loads = cold_loads(node, args.loads)
        stub.ApplyState(desired(2), timeout=30)
        wait_model(node, common_pb2.MODEL_STATE_READY)
        port = model_server_port(node)
        with httpx.Client(timeout=60) as client:
            ttft = interleaved(
                {
                    "direct": lambda: ttft_direct(client, port),
                    "node model path": lambda: ttft_proxy(node, stub),
                    "node agent path": lambda: ttft_agent(node, stub),
                },
                args.requests,
            )
        loaded_rss = node.rss()
        server_rss = sum(p.memory_info().rss for p in node.runtime_servers())
        node.terminate()
    report = {
        "benchmark": "node_footprint",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": psutil.cpu_count(), "python": sys.version.split()[0]},
        "node_rss_idle_mib": round(idle_rss / 2**20, 1),
        "node_rss_idle_by_mapping_mib": dict(idle_map),
        "node_rss_serving_mib": round(loaded_rss / 2**20, 1),
        "model_server_rss_mib": round(server_rss / 2**20, 1),
        "cold_load_ms": summary(loads),
        "first_token_ms": {name: summary(values) for name, values in ttft.items()},
        "requests_per_path": args.requests,
    }
    print(f"node RSS idle, no model:     {report['node_rss_idle_mib']} MiB")
    for mapping, mib in idle_map:
        print(f"  {mapping:<46} {mib} MiB")
    print(f"node RSS serving:            {report['node_rss_serving_mib']} MiB")
    print(f"llama-server RSS:            {report['model_server_rss_mib']} MiB")
    cold = report["cold_load_ms"]
    print(f"model cold load (ms):  min {cold['min']}  median {cold['median']}  max {cold['max']}")
    print("first token (ms)             min     median  p90     max")
    for name, figures in report["first_token_ms"].items():
        print(
            f"  {name:<26} {figures['min']:<7} {figures['median']:<7} "
            f"{figures['p90']:<7} {figures['max']}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
