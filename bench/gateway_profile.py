"""Where the gateway path's CPU goes: per thread, and in Python by part, under load.

    scripts/bench-setup                         # once: nginx, wrk, .venv-bench (py-spy)
    .venv/bin/python bench/gateway_profile.py   # [--via controller|node] [--seconds 6] …

Starts what bench/gateway.py's `edgefleet` target is (the zero-latency upstream, one
edge-node whose `openai` runtime points at it, a controller with its gateway) and,
with `--via node`, sends the load to the node's own gateway instead (its local
replica, called in process: the `edgefleet-node` target); then:

1. wrk at the given concurrency while psutil reads every thread's CPU time in the
   controller and the node: CPU per request by process and thread (the event loop's
   thread, gRPC's own threads, the rest);
2. wrk again while py-spy (from .venv-bench; non-blocking, samples of threads that hold
   the GIL) records both processes: the Python side's samples, grouped by the part of the
   path they are spent in (the deepest frame that belongs to a known part).

Everything runs on 127.0.0.1; every run is bounded in time. Prints tables and writes
bench/results/gateway_profile.json (`--via node`: gateway_profile_node.json).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from gateway_load import chat_body, run_wrk  # noqa: E402
from gateway_machine import describe  # noqa: E402
from gateway_nginx import Upstream  # noqa: E402
from gateway_runs import warm_up  # noqa: E402
from gateway_targets import EdgeFleetTarget, node_gateway, start_edgefleet  # noqa: E402

from edgefleet_common.ports import free_port  # noqa: E402

RESULTS = REPO / "bench" / "results"
PY_SPY = REPO / ".venv-bench" / "bin" / "py-spy"

PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "OpenAI handling (gateway)",
        (
            "edgefleet_dataplane/gateway.py",
            "edgefleet_dataplane/openai_wire.py",
            "edgefleet_dataplane/streams.py",
            "edgefleet_dataplane/escalation.py",
        ),
    ),
    (
        "routing (router, balancer, replica directory)",
        (
            *(
                f"edgefleet_dataplane/{module}.py"
                for module in ("router", "attempts", "balancer", "circuit", "replicas")
            ),
            "edgefleet_dataplane/retry_budget.py",
            "orchestrator/fleet/",
            "orchestrator/routing_index.py",
            "edgefleet_contract/routing.py",
        ),
    ),
    ("per-call certificate check", ("node_trust.py", "edgefleet_common/pki.py", "cryptography/")),
    ("model proxy, admission, metrics (node)", ("node_agent/", "prometheus_client/")),
    (
        "HTTP (server, client)",
        (
            "edgefleet_dataplane/http_server.py",
            "aiohttp/",
            "multidict/",
            "yarl/",
            "propcache/",
            "h11/",
        ),
    ),
    ("gRPC (grpc.aio Python side)", ("grpc/", "grpc_health/", "edgefleet_common/grpc")),
    ("protobuf", ("google/protobuf/", "_pb2.py")),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
    ("asyncio loop and tasks", ("asyncio/", "selectors.py", "contextlib.py", "<frozen abc>")),
)
"""A part of the path, by the files its frames are in (the first match wins)."""
NATIVE_CALLBACK = "native callbacks on the loop (gRPC's Cython core, mostly)"
"""A sample whose deepest Python frame is the loop running a callback: C code below it."""
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?):\d+\)$")


def part_of(stack: Sequence[str]) -> tuple[str, str]:
    """(part, frame) a sampled stack (outermost frame first) is spent in: the deepest
    frame that belongs to a part decides."""
    for depth, frame in enumerate(reversed(stack)):
        found = _FRAME.match(frame)
        if found is None:
            continue
        file, function = found["file"], found["function"]
        if depth == 0 and function == "Handle._run":
            return NATIVE_CALLBACK, "Handle._run"
        for name, markers in PARTS:
            if any(marker in file for marker in markers):
                return name, f"{function} ({file.rsplit('site-packages/', 1)[-1]})"
    return "other", stack[-1] if stack else ""


@dataclass
class Samples:
    """One process's samples, by part and by the frame that decided the part."""

    parts: Counter[str] = field(default_factory=Counter)
    frames: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(part, frame) → samples."""

    @classmethod
    def parse(cls, raw: str) -> Samples:
        """From py-spy's raw output (`frame;frame;… count` lines)."""
        found = cls()
        for line in raw.splitlines():
            stack, _, count = line.rstrip().rpartition(" ")
            if stack and count.isdigit():
                part, frame = part_of(stack.split(";"))
                found.parts[part] += int(count)
                found.frames[part, frame] += int(count)
        return found


# -- per-thread CPU ------------------------------------------------------------------------


def thread_times(pid: int) -> dict[tuple[int, str], float]:
    """(thread id, its name as the kernel knows it) → CPU seconds, for one process."""
    found = {}
    for thread in psutil.Process(pid).threads():
        try:
            name = Path(f"/proc/{pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:
            name = "?"
        found[(thread.id, name)] = thread.user_time + thread.system_time
    return found


def thread_kind(pid: int, tid: int, name: str) -> str:
    if tid == pid:
        return "event loop (main thread)"
    if name.startswith(("grpc", "default-execu", "resolver-exec", "timer")):
        return "gRPC core threads"
    return "other threads (gRPC's poller, executors)"


def cpu_by_thread(
    url: str, names: dict[int, str], body: bytes, concurrency: int, seconds: float
) -> dict[str, Any]:
    """One wrk run against `url`; CPU ms per request by process (`names`: pid → name) and
    kind of thread."""
    before = {pid: thread_times(pid) for pid in names}
    wrk = run_wrk(url, body, concurrency, seconds)
    split: dict[str, dict[str, float]] = {}
    for pid in names:
        kinds: dict[str, float] = {}
        for (tid, name), used in thread_times(pid).items():
            kind = thread_kind(pid, tid, name)
            kinds[kind] = kinds.get(kind, 0.0) + used - before[pid].get((tid, name), 0.0)
        split[names[pid]] = {k: round(1000 * v / wrk.requests, 3) for k, v in kinds.items() if v}
    return {
        "requests": wrk.requests,
        "per_second": round(wrk.per_second, 1),
        "p50_ms": wrk.p50_ms,
        "p99_ms": wrk.p99_ms,
        "cpu_ms_per_request": split,
    }


# -- py-spy --------------------------------------------------------------------------------


def sampled(
    url: str,
    names: dict[int, str],
    body: bytes,
    concurrency: int,
    seconds: float,
    rate: int,
    tmp: Path,
) -> dict[str, Samples]:
    """py-spy's samples of each process (`names`: pid → name) while wrk runs against `url`."""
    spies = {}
    for pid in names:
        output = tmp / f"{names[pid]}.txt"
        argv = [
            str(PY_SPY), "record", "--pid", str(pid), "--duration", f"{seconds + 1:g}",
            "--rate", str(rate), "--gil", "--nonblocking", "--format", "raw",
            "--output", str(output),
        ]  # fmt: skip
        spies[pid] = (
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
            output,
        )
    time.sleep(0.5)  # py-spy attached before the load starts
    run_wrk(url, body, concurrency, seconds)
    found = {}
    for pid, (spy, output) in spies.items():
        _, errors = spy.communicate(timeout=seconds + 60)
        if spy.returncode != 0 or not output.exists():
            raise RuntimeError(f"py-spy failed on {names[pid]}: {errors.decode(errors='replace')}")
        found[names[pid]] = Samples.parse(output.read_text())
    return found


def parts_table(found: dict[str, Samples], top: int) -> Iterator[str]:
    yield "| process | part | share of samples | where most (share of samples) |"
    yield "|---|---|---|---|"
    for process, samples in found.items():
        total = sum(samples.parts.values()) or 1
        for name, count in samples.parts.most_common():
            frames = [(f, n) for (p, f), n in samples.frames.most_common() if p == name][:top]
            where = "; ".join(f"{frame} {100 * n / total:.1f} %" for frame, n in frames)
            yield f"| {process} | {name} | {100 * count / total:.1f} % | {where} |"


def threads_table(split: dict[str, dict[str, float]]) -> Iterator[str]:
    yield "| process | thread | CPU ms/request |"
    yield "|---|---|---|"
    for process, kinds in split.items():
        for kind, ms in sorted(kinds.items(), key=lambda item: -item[1]):
            yield f"| {process} | {kind} | {ms:.3f} |"
        yield f"| {process} | all | {sum(kinds.values()):.3f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="wrk time per run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mode", choices=("json", "sse"), default="json")
    parser.add_argument(
        "--via",
        choices=("controller", "node"),
        default="controller",
        help="the controller's gateway, or the node's own (local replica, in process)",
    )
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=3, help="frames named per part")
    parser.add_argument("--output", type=Path, help="default: results/gateway_profile[_node].json")
    args = parser.parse_args()
    args.output = (
        args.output or RESULTS / f"gateway_profile{'_node' if args.via == 'node' else ''}.json"
    )
    if not PY_SPY.exists():
        print(f"{PY_SPY} is missing: run scripts/bench-setup", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="edgefleet-gateway-profile-") as folder:
        tmp = Path(folder)
        upstream = Upstream(tmp / "upstream", free_port(), free_port())
        target: EdgeFleetTarget | None = None
        try:
            target = start_edgefleet(
                tmp / "edgefleet",
                {"bench-node": {"zero": upstream.json_url, "zero-sse": upstream.sse_url}},
                {"json": "zero" if args.mode == "json" else "zero-sse"},
            )
            warm_up(target)
            route = target.routes["json"]
            if args.via == "node":
                local = node_gateway(target, "bench-node", {"json": route.model})
                warm_up(local)
                route = local.routes["json"]
            names = {p: "controller" if i == 0 else f"node-{i}" for i, p in enumerate(target.pids)}
            body = chat_body(route.model, args.mode == "sse")
            threads = cpu_by_thread(route.url, names, body, args.concurrency, args.seconds)
            found = sampled(route.url, names, body, args.concurrency, args.seconds, args.rate, tmp)
        finally:
            if target is not None:
                target.close()
            upstream.close()
    lines = [
        f"The gateway path via the {args.via} ({args.mode}, {args.concurrency} clients): "
        f"{threads['per_second']:,.0f} req/s, p50 {threads['p50_ms']:.2f} ms",
        *threads_table(threads["cpu_ms_per_request"]),
        "",
        "Python side by part (py-spy, threads holding the GIL):",
        *parts_table(found, args.top),
    ]
    print("\n".join(lines))
    report = {
        "benchmark": "gateway_profile",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe({}),
        "settings": vars(args) | {"output": _shown(args.output)},
        "threads": threads,
        "parts": {process: dict(samples.parts.most_common()) for process, samples in found.items()},
        "frames": {
            process: [[p, f, n] for (p, f), n in samples.frames.most_common(40)]
            for process, samples in found.items()
        },
        "table": lines,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it (reports name no machine)."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else path.name


if __name__ == "__main__":
    sys.exit(main())
