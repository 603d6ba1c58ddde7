"""What one grpc.aio call costs: the floor of the gateway's hop to a node, on asyncio and uvloop.

    scripts/bench-setup                            # once: .venv-bench (grpcio, uvloop)
    .venv-bench/bin/python bench/grpc_hop.py       # [--calls 4000] [--concurrency 1,16]

A unary-stream method (one request, two messages back, as a node's `ProxyModel`
answers a small completion) is served and called in one process over 127.0.0.1,
without TLS; CPU per call counts both sides. Each loop runs in a fresh process
of its own, and the calls are checked (every call gets both messages). Bounded
in count; writes bench/results/grpc_hop.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

RESULTS = Path(__file__).resolve().parent / "results" / "grpc_hop.json"
METHOD = "/bench.Hop/Stream"
REQUEST = b"x" * 200
"""About the size of a small chat-completions body."""


def handlers() -> grpc.GenericRpcHandler:
    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield request
        yield b"data: [DONE]\n\n"

    method = grpc.unary_stream_rpc_method_handler(stream)
    return grpc.method_handlers_generic_handler("bench.Hop", {"Stream": method})


async def measure(calls: int, concurrency: int) -> dict[str, Any]:
    """`calls` calls from `concurrency` callers; calls/s and CPU ms per call."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream(METHOD)
            left = [calls]
            messages = [0]

            async def caller() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    async for _ in call(REQUEST, timeout=30):
                        messages[0] += 1

            await asyncio.gather(*(caller() for _ in range(concurrency)))  # warm-up
            left[0], messages[0] = calls, 0
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(concurrency)))
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        await server.stop(None)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if messages[0] != 2 * calls:
        raise RuntimeError(f"{messages[0]} messages for {calls} calls (2 each expected)")
    return {
        "calls": calls,
        "concurrency": concurrency,
        "per_second": round(calls / wall, 1),
        "cpu_ms_per_call": round(1000 * cpu / calls, 3),
    }


def child(loop: str, calls: int, concurrency: list[int]) -> None:
    """Measure on `loop` in this process; one JSON line per concurrency."""

    async def all_of() -> None:
        for c in concurrency:
            print(json.dumps({"loop": loop, **await measure(calls, c)}), flush=True)

    if loop == "uvloop":
        import uvloop

        uvloop.run(all_of())
    else:
        asyncio.run(all_of())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", default="1,16", help="callers, comma-separated")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    concurrency = [int(c) for c in str(args.concurrency).split(",")]
    if args.loop:
        child(args.loop, args.calls, concurrency)
        return 0
    rows = []
    for loop in ("asyncio", "uvloop"):
        argv = [sys.executable, __file__, "--loop", loop, "--calls", str(args.calls)]
        argv += ["--concurrency", args.concurrency]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
        rows += [json.loads(line) for line in done.stdout.splitlines() if line]
    lines = [
        f"grpc.aio {grpc.__version__}, unary-stream, client and server in one process:",
        "| loop | callers | calls/s | CPU ms/call |",
        "|---|---|---|---|",
        *(
            f"| {r['loop']} | {r['concurrency']} | {r['per_second']:,.0f} "
            f"| {r['cpu_ms_per_call']:.3f} |"
            for r in rows
        ),
    ]
    print("\n".join(lines))
    report = {
        "benchmark": "grpc_hop",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "grpcio": grpc.__version__,
        "python": sys.version.split()[0],
        "rows": rows,
        "table": lines,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
