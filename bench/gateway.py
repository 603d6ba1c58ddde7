"""What the OpenAI gateway adds to a request, side by side with LiteLLM and nginx.

    scripts/bench-setup                  # once, as root: nginx, wrk, LiteLLM (.venv-litellm)
    .venv/bin/python bench/gateway.py    # [--seconds 5] [--concurrency 1,16,64] ...

Targets, all in one run, on the same upstreams:

* `direct` — the upstream itself (the baseline);
* `edgefleet` — the whole path a user's request takes: client → the controller's
  gateway → gRPC → `edge-node` (runtime `openai`) → upstream;
* `edgefleet-node` — an app on the box: client → the node's own gateway on
  loopback → its local replica, called in process → upstream;
* `edgefleet-node-peer` — the peer path: client → the gateway of a node with no
  replica of the alias → mutual TLS gRPC → the node that has one → upstream
  (checked from `X-EdgeFleet-Node` before measuring);
* `litellm` — LiteLLM's proxy, one worker, telemetry off, a master key set (it
  refuses to start without one), its documented retry and cool-down settings;
* `nginx` — nginx as a plain reverse proxy, one worker: the floor for one hop.

Upstreams: a zero-latency OpenAI-compatible server (nginx answering from memory
with a canned `chat.completion`, or a canned event stream), so that what is
measured is the proxies; its CPU is reported to show it is not the limit. And the
real llama.cpp server with SmolLM2-135M (started by the EdgeFleet node) for one
end-to-end row.

Figures per target, mode and concurrency (1, 16, 64): latency p50/p99 and
requests/s (wrk, one thread, whole answers), time to the first byte of a stream
(a Python asyncio client on raw keep-alive connections), and the proxy's CPU
time per request (psutil: EdgeFleet counts the controller and the node, the peer
path both nodes, never the model server; nginx its master and worker; LiteLLM
its process tree). Then a failover run per proxy: two upstreams (for EdgeFleet:
two nodes, each with its own), load from 16 clients, one upstream SIGKILLed;
for the peer path, a front node and two peers, one peer SIGKILLed; failed
requests counted.

Everything runs on 127.0.0.1; every load loop is bounded in time and count.
Results go to bench/results/gateway.json and are printed as tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway_load import wrk_version  # noqa: E402
from gateway_machine import OtherLoad, describe  # noqa: E402
from gateway_nginx import Upstream  # noqa: E402
from gateway_nginx import version as nginx_version  # noqa: E402
from gateway_peer import NAME as PEER  # noqa: E402
from gateway_peer import PeerTarget, peer_gateway  # noqa: E402
from gateway_report import cells_table, failover_table, llama_table, verdicts  # noqa: E402
from gateway_runs import (  # noqa: E402
    Cell,
    EndToEnd,
    Failover,
    cpu_seconds,
    end_to_end,
    failover,
    overhead_cell,
    warm_up,
)
from gateway_targets import (  # noqa: E402
    LLAMA_ALIAS,
    ROUTER_SETTINGS,
    EdgeFleetTarget,
    Target,
    direct,
    litellm_version,
    node_gateway,
    start_edgefleet,
    start_litellm,
    start_nginx,
)

from edgefleet_common.ports import free_port  # noqa: E402

RESULTS = REPO / "bench" / "results" / "gateway.json"
MODES = ("non-streaming", "streaming")
ROUTES = {"json": "zero", "sse": "zero-sse", "llama": LLAMA_ALIAS}
"""Route name → the alias (EdgeFleet) or model name (LiteLLM) it requests."""
GiB = 1024**3


# -- phase 1: overhead on the zero-latency upstream, and the llama.cpp row -----------------


def overhead(
    tmp: Path, args: argparse.Namespace, notes: list[str]
) -> tuple[list[Cell], list[EndToEnd]]:
    upstream = Upstream(tmp / "upstream", free_port(), free_port())
    targets: list[Target] = []
    try:
        edgefleet = start_edgefleet(
            tmp / "edgefleet",
            {
                "bench-node": {"zero": upstream.json_url, "zero-sse": upstream.sse_url},
                "bench-front": {},
            },
            ROUTES,
            llama_node="bench-node",
        )
        targets.append(edgefleet)
        targets.append(node_gateway(edgefleet, "bench-node", ROUTES))
        targets.append(peer_gateway(edgefleet, "bench-front", ["bench-node"], ROUTES))
        llama = f"http://127.0.0.1:{edgefleet.llama_port()}/v1"
        urls = {"json": upstream.json_url, "sse": upstream.sse_url, "llama": llama}
        targets.insert(0, direct(urls))
        targets.append(start_nginx(tmp / "nginx", {k: [v] for k, v in urls.items()}))
        litellm = maybe_litellm(
            lambda: start_litellm(
                tmp / "litellm",
                {ROUTES[k]: [v] for k, v in urls.items()},
                ROUTES,
            ),
            notes,
        )
        if litellm is not None:
            targets.insert(4, litellm)
        for target in targets:
            warm_up(target)
        cells: list[Cell] = []
        for concurrency in args.concurrency:
            for mode in MODES:
                for target in targets:
                    cell = overhead_cell(
                        target,
                        mode,
                        concurrency,
                        upstream.processes(),
                        args.seconds,
                        args.ttfb_seconds,
                        args.ttfb_requests,
                    )
                    cells.append(cell)
                    progress(f"{target.name} {mode} c={concurrency}: {cell.per_second:.0f}/s")
        rows = end_to_end(targets, args.llama_rounds, args.max_tokens)
        progress("llama.cpp end to end done")
        return cells, rows
    finally:
        for target in targets:
            target.close()
        upstream.close()


def maybe_litellm(start: Callable[[], Target], notes: list[str]) -> Target | None:
    """LiteLLM started, or None with the reason noted (the rest still runs)."""
    try:
        return start()
    except RuntimeError as exc:
        notes.append(f"LiteLLM left out: {str(exc)[:2000]}")
        progress(f"LiteLLM left out: {str(exc)[:300]}")
        return None


# -- phase 2: failover ---------------------------------------------------------------------


def failovers(tmp: Path, args: argparse.Namespace, notes: list[str]) -> list[Failover]:
    found: list[Failover] = []
    for name in ("edgefleet", PEER, "litellm", "nginx"):
        folder = tmp / f"failover-{name}"
        first = Upstream(folder / "u1", free_port(), free_port())
        second = Upstream(folder / "u2", free_port(), free_port())
        target: Target | None = None
        try:
            target = start_failover_target(name, folder, first.json_url, second.json_url, notes)
            if target is None:
                continue
            warm_up(target)
            used: list[float] = []
            kill = (
                peer_killer(target, "node-1", used)
                if name == PEER
                else upstream_killer(first, used)
            )
            report, _ = failover(
                target, kill, args.failover_concurrency, args.failover_seconds, args.kill_at
            )
            report.killed_upstream_cpu_s = round(used[0], 2) if used else 0.0
            if report.failed and name in ("edgefleet", PEER):
                notes.append(f"edgefleet failover: {edgefleet_logs(target)}")
            found.append(report)
            progress(f"failover {name}: {report.failed} of {report.requests} failed")
        finally:
            if target is not None:
                target.close()
            first.close()
            second.close()
    return found


def upstream_killer(upstream: Upstream, used: list[float]) -> Callable[[], None]:
    """SIGKILL `upstream`, first noting in `used` the CPU it had used."""

    def kill() -> None:
        used.append(cpu_seconds(upstream.processes()))
        upstream.kill()

    return kill


def peer_killer(target: Target, node_id: str, used: list[float]) -> Callable[[], None]:
    """SIGKILL the peer node `node_id` of the peer target, first noting in `used` the CPU it
    had used."""
    if not isinstance(target, PeerTarget) or target.fleet is None:
        raise TypeError(f"{target.name} is not a peer target owning its fleet")
    peer = next(n for n in target.fleet.nodes if n.node_id == node_id)

    def kill() -> None:
        used.append(cpu_seconds([psutil.Process(peer.pid)]))
        peer.kill()

    return kill


def start_failover_target(
    name: str, folder: Path, first: str, second: str, notes: list[str]
) -> Target | None:
    routes = {"json": "zero"}
    if name == "edgefleet":
        nodes = {"node-1": {"zero": first}, "node-2": {"zero": second}}
        return start_edgefleet(folder / "edgefleet", nodes, routes)
    if name == PEER:
        # node-0 holds nothing: every request it takes goes to node-1 or node-2.
        nodes = {"node-0": {}, "node-1": {"zero": first}, "node-2": {"zero": second}}
        fleet = start_edgefleet(folder / "edgefleet", nodes, routes)
        try:
            return peer_gateway(fleet, "node-0", ["node-1", "node-2"], routes, owns_fleet=True)
        except BaseException:
            fleet.close()
            raise
    if name == "litellm":
        return maybe_litellm(
            lambda: start_litellm(folder / "litellm", {"zero": [first, second]}, routes), notes
        )
    return start_nginx(folder / "nginx", {"json": [first, second]})


def edgefleet_logs(target: Target) -> str:
    """The controller's and nodes' last lines, to say where requests failed."""
    fleet = target.fleet if isinstance(target, PeerTarget) else target
    if not isinstance(fleet, EdgeFleetTarget):
        return ""
    parts = [fleet.controller.log(15)] if fleet.controller is not None else []
    parts += [node.log(15) for node in fleet.nodes]
    return "\n".join(parts)


# -- the report ----------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,16,64", help="clients, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk time per cell")
    parser.add_argument("--ttfb-seconds", type=float, default=4.0, help="first-byte run time")
    parser.add_argument("--ttfb-requests", type=int, default=20_000, help="first-byte run cap")
    parser.add_argument("--llama-rounds", type=int, default=20, help="llama.cpp requests/path")
    parser.add_argument("--max-tokens", type=int, default=8, help="llama.cpp max_tokens")
    parser.add_argument("--failover-seconds", type=float, default=15.0)
    parser.add_argument("--failover-concurrency", type=int, default=16)
    parser.add_argument("--kill-at", type=float, default=4.0, help="seconds into the failover run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.concurrency = [int(c) for c in str(args.concurrency).split(",")]
    notes: list[str] = []
    started = time.monotonic()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        progress(f"the machine is not quiet (load {load_before[0]:.2f}): figures will be noisy")
    with (
        tempfile.TemporaryDirectory(prefix="edgefleet-gateway-bench-") as folder,
        OtherLoad() as other_load,
    ):
        tmp = Path(folder)
        cells, llama_rows = overhead(tmp, args, notes)
        failover_rows = failovers(tmp, args, notes)
    wall = time.monotonic() - started
    others = other_load.percent
    lines = [
        "Zero-latency upstream, whole answers (wrk):",
        *cells_table(cells, "non-streaming"),
        "",
        "Zero-latency upstream, streamed (first byte: Python client; req/s: wrk):",
        *cells_table(cells, "streaming"),
        "",
        f"llama.cpp, SmolLM2-135M, one request at a time ({args.llama_rounds} each, "
        f"max_tokens {args.max_tokens}):",
        *llama_table(llama_rows),
        "",
        f"Failover: {args.failover_concurrency} clients, one of two upstreams SIGKILLed "
        f"{args.kill_at:g} s into {args.failover_seconds:g} s ({PEER}: one of two peer "
        "nodes SIGKILLed):",
        *failover_table(failover_rows),
    ]
    lines.append(f"\nCPU used by other processes during the run: {others:.0f} % of one core")
    print("\n".join(lines))
    report = {
        "benchmark": "gateway",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe(
            {"litellm": litellm_version(), "nginx": nginx_version(), "wrk": wrk_version()}
        ),
        "seconds": round(wall, 1),
        "load_average_before": [round(v, 2) for v in load_before],
        "other_processes_cpu_percent": round(others, 1),
        "settings": {
            "concurrency": args.concurrency,
            "wrk_seconds_per_cell": args.seconds,
            "first_byte_seconds_per_cell": args.ttfb_seconds,
            "llama_rounds": args.llama_rounds,
            "max_tokens": args.max_tokens,
            "failover_seconds": args.failover_seconds,
            "failover_concurrency": args.failover_concurrency,
            "kill_at_s": args.kill_at,
            "litellm_router_settings": ROUTER_SETTINGS,
        },
        "tools": {
            "latency_throughput_cpu": "wrk, one thread, keep-alive, whole answers",
            "first_byte_and_failover": "Python asyncio client on raw HTTP/1.1 connections",
            "cpu": "psutil user+system time of the proxy's processes over the wrk run / "
            "requests; edgefleet = controller + node, edgefleet-node-peer = the front node "
            "+ the peer that serves (never model servers)",
        },
        "targets": verdicts(cells, failover_rows),
        "zero_latency": [asdict(c) for c in cells],
        "llama_cpp": [asdict(r) for r in llama_rows],
        "failover": [asdict(r) for r in failover_rows],
        "notes": notes,
        "table": lines,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
