"""What the OpenAI gateway adds to a request, side by side with LiteLLM and nginx.

    scripts/bench-setup                  # once, as root: nginx, wrk, LiteLLM (.venv-litellm)
    .venv/bin/python bench/gateway.py    # [--seconds 5] [--concurrency 1,16,64] ...

Targets, all in one run, on the same upstreams:

* `direct` — the upstream itself (the baseline);
* `edgefleet` — the whole path a user's request takes: client → the controller's
  gateway → gRPC → `edge-node` (runtime `openai`) → upstream;
* `edgefleet-node` — an app on the box: client → the node's own gateway on
  loopback → its local replica, called in process → upstream;
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
time per request (psutil: EdgeFleet counts the controller and the node, not the
model server; nginx its master and worker; LiteLLM its process tree). Then a
failover run per proxy: two upstreams (for EdgeFleet: two nodes, each with its
own), load from 16 clients, one upstream SIGKILLed; failed requests counted.

Everything runs on 127.0.0.1; every load loop is bounded in time and count.
Results go to bench/results/gateway.json and are printed as tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway_load import wrk_version  # noqa: E402
from gateway_machine import OtherLoad, describe  # noqa: E402
from gateway_nginx import Upstream  # noqa: E402
from gateway_nginx import version as nginx_version  # noqa: E402
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
            {"bench-node": {"zero": upstream.json_url, "zero-sse": upstream.sse_url}},
            ROUTES,
            llama_node="bench-node",
        )
        targets.append(edgefleet)
        targets.append(node_gateway(edgefleet, "bench-node", ROUTES))
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
            targets.insert(3, litellm)
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
    for name in ("edgefleet", "litellm", "nginx"):
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

            def kill(upstream: Upstream = first, used: list[float] = used) -> None:
                used.append(cpu_seconds(upstream.processes()))
                upstream.kill()

            report, _ = failover(
                target, kill, args.failover_concurrency, args.failover_seconds, args.kill_at
            )
            report.killed_upstream_cpu_s = round(used[0], 2) if used else 0.0
            if report.failed and name == "edgefleet":
                notes.append(f"edgefleet failover: {edgefleet_logs(target)}")
            found.append(report)
            progress(f"failover {name}: {report.failed} of {report.requests} failed")
        finally:
            if target is not None:
                target.close()
            first.close()
            second.close()
    return found


def start_failover_target(
    name: str, folder: Path, first: str, second: str, notes: list[str]
) -> Target | None:
    routes = {"json": "zero"}
    if name == "edgefleet":
        nodes = {"node-1": {"zero": first}, "node-2": {"zero": second}}
        return start_edgefleet(folder / "edgefleet", nodes, routes)
    if name == "litellm":
        return maybe_litellm(
            lambda: start_litellm(folder / "litellm", {"zero": [first, second]}, routes), notes
        )
    return start_nginx(folder / "nginx", {"json": [first, second]})


def edgefleet_logs(target: Target) -> str:
    """The controller's and nodes' last lines, to say where requests failed."""
    if not isinstance(target, EdgeFleetTarget):
        return ""
    parts = [target.controller.log(15)] if target.controller is not None else []
    parts += [node.log(15) for node in target.nodes]
    return "\n".join(parts)


# -- the report ----------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def added(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "-"
    return f"{value - base:+.2f}" if abs(value - base) < 100 else f"{value - base:+.0f}"


def cells_table(cells: Sequence[Cell], mode: str) -> Iterator[str]:
    base = {c.concurrency: c for c in cells if c.target == "direct" and c.mode == mode}
    if mode == "non-streaming":
        yield (
            "| target | clients | req/s | p50 ms | p99 ms | added p50 | added p99 "
            "| proxy CPU/req | proxy RSS | errors | upstream CPU |"
        )
        yield "|---" * 11 + "|"
        for c in cells:
            if c.mode != mode:
                continue
            b = base.get(c.concurrency)
            yield (
                f"| {c.target} | {c.concurrency} | {c.per_second:,.0f} | {ms(c.p50_ms)} "
                f"| {ms(c.p99_ms)} | {added(c.p50_ms, b.p50_ms if b else None)} "
                f"| {added(c.p99_ms, b.p99_ms if b else None)} | {cpu(c)} | {rss(c)} "
                f"| {c.errors} | {c.upstream_cpu_percent:.0f} % |"
            )
        return
    yield (
        "| target | clients | req/s (wrk) | first byte p50 ms | p99 ms | added p50 | added p99 "
        "| proxy CPU/req | errors | client CPU |"
    )
    yield "|---" * 10 + "|"
    for c in cells:
        if c.mode != mode:
            continue
        b = base.get(c.concurrency)
        yield (
            f"| {c.target} | {c.concurrency} | {c.per_second:,.0f} | {ms(c.ttfb_p50_ms)} "
            f"| {ms(c.ttfb_p99_ms)} | {added(c.ttfb_p50_ms, b.ttfb_p50_ms if b else None)} "
            f"| {added(c.ttfb_p99_ms, b.ttfb_p99_ms if b else None)} | {cpu(c)} "
            f"| {c.errors + c.ttfb_errors} | {c.client_cpu_percent:.0f} % |"
        )


def cpu(cell: Cell) -> str:
    return "-" if cell.cpu_ms_per_request is None else f"{cell.cpu_ms_per_request:.2f} ms"


def rss(cell: Cell) -> str:
    return "-" if cell.rss_mib is None else f"{cell.rss_mib:.0f} MiB"


def llama_table(rows: Sequence[EndToEnd]) -> Iterator[str]:
    base = next((r for r in rows if r.target == "direct"), None)
    yield (
        "| target | first byte p50 ms | p90 ms | added p50 | whole answer p50 ms | p90 ms "
        "| added p50 | errors |"
    )
    yield "|---" * 8 + "|"
    for r in rows:
        yield (
            f"| {r.target} | {ms(r.ttfb_p50_ms)} | {ms(r.ttfb_p90_ms)} "
            f"| {added(r.ttfb_p50_ms, base.ttfb_p50_ms if base else None)} "
            f"| {ms(r.whole_p50_ms)} | {ms(r.whole_p90_ms)} "
            f"| {added(r.whole_p50_ms, base.whole_p50_ms if base else None)} | {r.errors} |"
        )


def failover_table(rows: Sequence[Failover]) -> Iterator[str]:
    yield (
        "| target | requests | failed | failures seen (after the kill) | req/s before | after "
        "| errors |"
    )
    yield "|---" * 7 + "|"
    for r in rows:
        window = (
            "none"
            if r.first_failure_s is None
            else f"{r.first_failure_s:.2f} s … {r.last_failure_s:.2f} s"
        )
        errors = ", ".join(f"{k} x {v}" for k, v in sorted(r.errors.items())) or "-"
        yield (
            f"| {r.target} | {r.requests:,} | {r.failed} | {window} "
            f"| {r.per_second_before:,.0f} | {r.per_second_after:,.0f} | {errors} |"
        )


def verdicts(cells: Sequence[Cell], rows: Sequence[Failover]) -> dict[str, Any]:
    """The issue's targets, checked against what was measured."""

    def get(target: str, mode: str, concurrency: int) -> Cell | None:
        return next(
            (c for c in cells if (c.target, c.mode, c.concurrency) == (target, mode, concurrency)),
            None,
        )

    found: dict[str, Any] = {}
    base = get("direct", "non-streaming", 1)
    for target, prefix in (("edgefleet", ""), ("edgefleet-node", "local_")):
        ours = get(target, "non-streaming", 1)
        if ours and base:
            extra = round(ours.p50_ms - base.p50_ms, 3)
            found[f"{prefix}overhead_p50_ms_at_1"] = {
                "measured": extra,
                "target": 1.0,
                "met": extra <= 1.0,
            }
        ratios = {}
        for c in sorted({c.concurrency for c in cells}):
            ours, theirs = get(target, "non-streaming", c), get("litellm", "non-streaming", c)
            if ours and theirs and theirs.per_second:
                ratios[str(c)] = round(ours.per_second / theirs.per_second, 2)
        if ratios:
            # The local path's target is set at 16 clients; the controller's, at every count.
            judged = [ratios.get("16", 0.0)] if prefix else list(ratios.values())
            found[f"{prefix}throughput_vs_litellm"] = {
                "measured": ratios,
                "target": 20.0,
                "at_clients": 16 if prefix else "all",
                "met": min(judged) >= 20.0,
            }
    ours_failover = next((r for r in rows if r.target == "edgefleet"), None)
    if ours_failover is not None:
        found["failed_on_upstream_kill"] = {
            "measured": ours_failover.failed,
            "target": 0,
            "met": ours_failover.failed == 0,
        }
    return found


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
        f"{args.kill_at:g} s into {args.failover_seconds:g} s:",
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
            "requests; edgefleet = controller + node (not its model servers)",
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
