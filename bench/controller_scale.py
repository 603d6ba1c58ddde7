"""How the controller scales with the number of nodes: a benchmark, not a test.

    python bench/controller_scale.py [--nodes 50,200,500] [--steady 10] [--stores sqlite,etcd]

Three figures per fleet size, the last two per state store (side by side in one run):

* scheduler placements/s — the pure scheduler (`orchestrator.scheduler.schedule`)
  placing a distributed-edge deployment with one model and two agents per node,
  from nothing; and the cost of a steady-state pass (scheduling the result again);
* apply-to-all-acknowledged — a real `edgectl controller` process (its own
  process, so its CPU and memory are its own) with every node at a static
  address: the time from the Apply call returning to every node having received
  its desired state, and to the controller reporting every agent ready;
* steady state — the controller's CPU (% of one core) and resident memory while
  every node streams a heartbeat each second and the gRPC keepalive pings each
  connection every second; on etcd, also the etcd server's CPU and memory.

Stores: `sqlite` (the controller's default, a file in its data folder) and `etcd`
(a real single-member etcd, `/usr/bin/etcd`, started for each row on free loopback
ports with its own data folder; the controller runs with `--store etcd://…`,
campaigns, and the manifest is applied once it leads).

The nodes are a SIMULATION: each is a real gRPC server (its own port on
127.0.0.1, the real node API and wire format) inside this process, answering
GetInfo, ApplyState, ApplyRoutes and WatchStatus like an edge-node whose models
load at once. No model runs. Everything stays on loopback and stops by itself.
A row that fails (a wait runs out) is reported with the controller's last error and
the run goes on.

Results go to bench/results/controller_scale.json and are printed as two tables
(the scheduler per fleet size; the controller per store and fleet size).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scale_controller import (  # noqa: E402
    last_error,
    log_tail,
    start_controller,
    wait_in_charge,
    wait_serving,
)
from scale_nodes import HEARTBEAT_S, GiB, node_id, start_sims  # noqa: E402
from scale_store import STORES, StoreUnderTest, etcd_version, parse_stores, store_for  # noqa: E402

from edgefleet.v1 import common_pb2, controller_pb2, controller_pb2_grpc  # noqa: E402
from edgefleet_common.grpc_transport import client_options  # noqa: E402
from orchestrator.manifest import load_text  # noqa: E402
from orchestrator.scheduler import NodeView, schedule  # noqa: E402
from tests.etcd_server import etcd_binary  # noqa: E402

RESULTS = REPO / "bench" / "results" / "controller_scale.json"
ROW_TIMEOUT_S = 300.0
"""Default: each wait within a row (the nodes acknowledged, the agents ready) gives up
after this (`--row-timeout`)."""


def manifest(addresses: list[str]) -> str:
    """A distributed-edge deployment: per node one model and two agents, static addresses."""
    lines = [
        "deployment:",
        "  type: distributed-edge",
        "  name: scale",
        "  coordination: {load_balancing: true, failover: automatic}",
        "  nodes:",
    ]
    for index, address in enumerate(addresses):
        lines += [
            f"    - id: {node_id(index)}",
            f'      address: "{address}"',
            f"      models: [model-{index % 4}]",
            f"      agents: [agent-{index:04d}-a, agent-{index:04d}-b]",
        ]
    return "\n".join(lines) + "\n"


# -- the pure scheduler ---------------------------------------------------------------------


@dataclass
class SchedulerFigures:
    placements: int
    from_empty_ms: float
    placements_per_s: float
    steady_pass_ms: float


def bench_scheduler(count: int, repeat: int = 3) -> SchedulerFigures:
    desired = load_text(
        manifest([f"127.0.0.1:{10000 + i}" for i in range(count)]), source="<scale>"
    )
    nodes = [NodeView(node_id(i), "ready", memory_total_bytes=16 * GiB) for i in range(count)]
    times: list[float] = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = schedule([desired.desired], nodes, {})
        times.append(time.perf_counter() - start)
    assert result is not None
    placements = sum(len(d.models) + len(d.agents) for d in result.assignment.values())
    steady: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        again = schedule([desired.desired], nodes, result.assignment)
        steady.append(time.perf_counter() - start)
        assert not again.plan.steps, "a steady-state pass planned work"
    best = min(times)
    return SchedulerFigures(placements, best * 1000, placements / best, min(steady) * 1000)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


@dataclass
class Usage:
    """A process's CPU (% of one core) and median resident memory over the steady state."""

    cpu_percent: float
    rss_mib: float
    cpu_s: float
    wall_s: float


async def steady_usage(processes: list[psutil.Process], seconds: float) -> list[Usage]:
    """Each process's CPU and memory over `seconds`, sampled every 0.5 s."""
    cpu_before = [cpu_seconds(p) for p in processes]
    wall_before = time.perf_counter()
    rss: list[list[int]] = [[] for _ in processes]
    while time.perf_counter() - wall_before < seconds:
        for samples, process in zip(rss, processes, strict=True):
            samples.append(process.memory_info().rss)
        await asyncio.sleep(0.5)
    wall = time.perf_counter() - wall_before
    return [
        Usage(
            cpu_percent=round(100 * (cpu_seconds(p) - before) / wall, 1),
            rss_mib=round(statistics.median(samples) / 2**20, 1),
            cpu_s=cpu_seconds(p) - before,
            wall_s=wall,
        )
        for p, before, samples in zip(processes, cpu_before, rss, strict=True)
    ]


@dataclass
class Rollout:
    """Seconds from the Apply call: every node connected and ready, every node holding
    its desired state, every agent ready; and the Apply call itself."""

    connected_s: float
    apply_rpc_s: float
    acknowledged_s: float
    ready_s: float


async def roll_out(
    api: Any, addresses: list[str], acknowledged: dict[str, float], timeout: float
) -> Rollout:
    """Apply the manifest naming every simulated node; wait until they all run it."""
    count = len(addresses)
    start = time.perf_counter()
    await api.Apply(controller_pb2.ApplyRequest(manifest=manifest(addresses), source="scale.yaml"))
    applied = time.perf_counter() - start
    # The nodes are named by the manifest: the controller connects, then pushes.
    connected = None
    while len(acknowledged) < count:
        if connected is None:
            nodes = await api.ListNodes(controller_pb2.ListNodesRequest())
            if sum(n.state == common_pb2.NODE_STATE_READY for n in nodes.nodes) == count:
                connected = time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise RuntimeError(
                f"only {len(acknowledged)}/{count} nodes acknowledged within {timeout:.0f} s"
            )
        await asyncio.sleep(0.01)
    acked = max(acknowledged.values()) - start
    while True:
        agents = await api.ListAgents(controller_pb2.ListAgentsRequest())
        if agents.agents and all(a.ready_replicas >= 1 for a in agents.agents):
            break
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"agents not ready within {timeout:.0f} s")
        await asyncio.sleep(0.05)
    ready = time.perf_counter() - start
    return Rollout(connected if connected is not None else acked, applied, acked, ready)


@dataclass
class FleetFigures:
    store: str
    nodes: int
    connected_s: float
    apply_rpc_ms: float
    all_acknowledged_s: float
    all_ready_s: float
    steady_cpu_percent: float
    steady_rss_mib: float
    cpu_ms_per_heartbeat: float
    etcd_cpu_percent: float | None = None
    etcd_rss_mib: float | None = None


async def bench_fleet(
    count: int, steady_s: float, data_dir: Path, store: StoreUnderTest, timeout: float
) -> FleetFigures:
    """One row: simulated nodes, a controller on `store`, the rollout, the steady state."""
    acknowledged: dict[str, float] = {}
    servers, addresses = await start_sims(count, acknowledged)
    log = data_dir.parent / "controller.log"
    process, address = start_controller(data_dir, store, log)
    try:
        await wait_serving(address)
        async with grpc.aio.insecure_channel(address, options=client_options()) as channel:
            api = controller_pb2_grpc.ControllerServiceStub(channel)
            await wait_in_charge(api)
            rollout = await roll_out(api, addresses, acknowledged, timeout)
        # Steady state: let the rollout's aftermath settle, then measure.
        await asyncio.sleep(2.0)
        watched = [psutil.Process(process.pid)] + ([store.server] if store.server else [])
        usage = await steady_usage(watched, steady_s)
    except (RuntimeError, grpc.RpcError) as exc:
        raise RowFailed(f"{exc}", last_error(log), log_tail(log)) from exc
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(20)
        if process.poll() is None:
            process.kill()
        await asyncio.gather(*(s.stop(0) for s in servers))
    controller = usage[0]
    etcd = usage[1] if len(usage) > 1 else None
    return FleetFigures(
        store=store.kind,
        nodes=count,
        connected_s=round(rollout.connected_s, 3),
        apply_rpc_ms=round(rollout.apply_rpc_s * 1000, 1),
        all_acknowledged_s=round(rollout.acknowledged_s, 3),
        all_ready_s=round(rollout.ready_s, 3),
        steady_cpu_percent=controller.cpu_percent,
        steady_rss_mib=controller.rss_mib,
        cpu_ms_per_heartbeat=round(
            1000 * controller.cpu_s / (count * controller.wall_s / HEARTBEAT_S), 3
        ),
        etcd_cpu_percent=etcd.cpu_percent if etcd else None,
        etcd_rss_mib=etcd.rss_mib if etcd else None,
    )


class RowFailed(Exception):
    """A row that did not finish: what ran out, the controller's last error, its log tail."""

    def __init__(self, what: str, cause: str, tail: str) -> None:
        super().__init__(what)
        self.what, self.cause, self.tail = what, cause, tail


@dataclass
class FailedRow:
    store: str
    nodes: int
    error: str
    controller_error: str


def run_row(count: int, steady_s: float, kind: str, timeout: float) -> FleetFigures | FailedRow:
    """One fleet size on one store, in its own temporary folder."""
    with (
        tempfile.TemporaryDirectory(prefix="edgefleet-scale-") as tmp,
        store_for(kind, Path(tmp)) as store,
    ):
        try:
            return asyncio.run(
                bench_fleet(count, steady_s, Path(tmp) / "controller", store, timeout)
            )
        except RowFailed as failed:
            kept = keep_log(Path(tmp) / "controller.log", f"{kind}-{count}")
            print(
                f"{kind}, {count} nodes failed: {failed.what}\n{failed.tail}\n"
                f"the controller's whole log: {kept}",
                file=sys.stderr,
            )
            return FailedRow(kind, count, failed.what, failed.cause)


def keep_log(log: Path, row: str) -> Path:
    """A copy of a failed row's controller log that outlives the row's folder."""
    handle, name = tempfile.mkstemp(prefix=f"edgefleet-scale-{row}-", suffix=".log")
    with os.fdopen(handle, "wb") as copy:
        copy.write(log.read_bytes() if log.exists() else b"")
    return Path(name)


# -- the report -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / GiB, 1),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "etcd": etcd_version(),
    }


def show(scheduler: dict[int, SchedulerFigures], fleets: list[FleetFigures | FailedRow]) -> None:
    """The two tables, as Markdown."""
    print("| nodes | placements | schedule from empty | placements/s | steady pass |")
    print("|---" * 5 + "|")
    for n, s in scheduler.items():
        print(
            f"| {n} | {s.placements} | {s.from_empty_ms:.1f} ms | {s.placements_per_s:,.0f} "
            f"| {s.steady_pass_ms:.1f} ms |"
        )
    print()
    print(
        "| store | nodes | all connected | apply → all acknowledged | → all ready "
        "| controller CPU | controller RSS | CPU per heartbeat | etcd CPU | etcd RSS |"
    )
    print("|---" * 10 + "|")
    for f in fleets:
        if isinstance(f, FailedRow):
            cause = f"; the controller: {f.controller_error}" if f.controller_error else ""
            print(f"| {f.store} | {f.nodes} | failed: {f.error}{cause} |")
            continue
        etcd_cpu = "-" if f.etcd_cpu_percent is None else f"{f.etcd_cpu_percent:.1f} %"
        etcd_rss = "-" if f.etcd_rss_mib is None else f"{f.etcd_rss_mib:.0f} MiB"
        print(
            f"| {f.store} | {f.nodes} | {f.connected_s:.2f} s | {f.all_acknowledged_s:.2f} s "
            f"| {f.all_ready_s:.2f} s | {f.steady_cpu_percent:.1f} % | {f.steady_rss_mib:.0f} MiB "
            f"| {f.cpu_ms_per_heartbeat:.3f} ms | {etcd_cpu} | {etcd_rss} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="50,200,500", help="fleet sizes, comma-separated")
    parser.add_argument("--steady", type=float, default=10.0, help="seconds of steady state")
    parser.add_argument(
        "--stores",
        type=parse_stores,
        default=list(STORES),
        help="state stores to run each fleet size on: sqlite, etcd or both (default both)",
    )
    parser.add_argument(
        "--row-timeout",
        type=float,
        default=ROW_TIMEOUT_S,
        help=f"seconds each wait of a row may take (default {ROW_TIMEOUT_S:.0f})",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if "etcd" in args.stores and etcd_binary() is None:
        print(
            "cannot run the etcd rows: etcd is not installed (scripts/setup installs Debian's "
            "etcd-server; or run with --stores sqlite)",
            file=sys.stderr,
        )
        return 2
    sizes = [int(n) for n in args.nodes.split(",")]
    scheduler = {n: bench_scheduler(n) for n in sizes}
    fleets: list[FleetFigures | FailedRow] = []
    for n in sizes:
        for kind in args.stores:
            fleets.append(run_row(n, args.steady, kind, args.row_timeout))
            print(f"  {n} nodes on {kind} done", file=sys.stderr)
    show(scheduler, fleets)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "controller_scale",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "steady_seconds": args.steady,
        "note": "nodes are simulated: one real gRPC server each, in the benchmark's process; "
        "etcd is one member on loopback, started for each row",
        "scheduler": [{"nodes": n, **asdict(s)} for n, s in scheduler.items()],
        "fleets": [asdict(f) for f in fleets],
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
