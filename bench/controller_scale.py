"""How the controller scales with the number of nodes: a benchmark, not a test.

    python bench/controller_scale.py [--nodes 50,200,500] [--steady 10]

Three figures per fleet size:

* scheduler placements/s — the pure scheduler (`orchestrator.scheduler.schedule`)
  placing a distributed-edge deployment with one model and two agents per node,
  from nothing; and the cost of a steady-state pass (scheduling the result again);
* apply-to-all-acknowledged — a real `edgectl controller` process (its own
  process, so its CPU and memory are its own) with every node at a static
  address: the time from the Apply call returning to every node having received
  its desired state, and to the controller reporting every agent ready;
* steady state — the controller's CPU (% of one core) and resident memory while
  every node streams a heartbeat each second and the gRPC keepalive pings each
  connection every second.

The nodes are a SIMULATION: each is a real gRPC server (its own port on
127.0.0.1, the real node API and wire format) inside this process, answering
GetInfo, ApplyState and WatchStatus like an edge-node whose models load at
once. No model runs. Everything stays on loopback and stops by itself.

Results go to bench/results/controller_scale.json and are printed as a table.
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
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgefleet.v1 import (  # noqa: E402
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
)
from edgefleet_common.grpc_transport import client_options, server_options  # noqa: E402
from edgefleet_common.ports import free_port  # noqa: E402
from edgefleet_contract.wire import timestamp  # noqa: E402
from orchestrator.manifest import load_text  # noqa: E402
from orchestrator.scheduler import NodeView, schedule  # noqa: E402

RESULTS = REPO / "bench" / "results" / "controller_scale.json"
GiB = 1024**3
HEARTBEAT_S = 1.0
MODEL = common_pb2.MODEL_STATE_READY
AGENT = common_pb2.AGENT_STATE_READY


# -- the manifest ---------------------------------------------------------------------------


def node_id(index: int) -> str:
    return f"sim-{index:04d}"


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


# -- simulated nodes ------------------------------------------------------------------------


class SimNode(node_pb2_grpc.NodeServiceServicer):  # type: ignore[misc]
    """The node API of an edge-node whose models load instantly (no runtime)."""

    def __init__(self, ident: str, acknowledged: dict[str, float]) -> None:
        self.ident = ident
        self.generation = 0
        self.state = node_pb2.NodeDesiredState()
        self._acknowledged = acknowledged
        self._changed = asyncio.Event()
        self._capacity = common_pb2.Capacity(
            cpu_count=4, memory_total_bytes=16 * GiB, memory_available_bytes=12 * GiB
        )

    async def GetInfo(self, request: Any, context: Any) -> node_pb2.NodeInfo:
        return node_pb2.NodeInfo(
            node_id=self.ident, version="sim", capacity=self._capacity, generation=self.generation
        )

    async def ApplyState(self, request: Any, context: Any) -> node_pb2.ApplyStateResponse:
        if request.generation < self.generation:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "stale generation")
        self.generation = request.generation
        self.state = request.state
        if request.state.agents:
            self._acknowledged.setdefault(self.ident, time.perf_counter())
        self._changed.set()
        return node_pb2.ApplyStateResponse(generation=self.generation)

    def _status(self, seq: int, heartbeat: bool) -> node_pb2.NodeStatus:
        return node_pb2.NodeStatus(
            node_id=self.ident,
            generation=self.generation,
            seq=seq,
            sent_at=timestamp(time.time()),
            heartbeat=heartbeat,
            models=[
                common_pb2.ModelStatus(alias=m.alias, state=MODEL, runtime="sim")
                for m in self.state.models
            ],
            agents=[
                common_pb2.AgentStatus(name=a.name, model=a.model, state=AGENT)
                for a in self.state.agents
            ],
            load=common_pb2.NodeLoad(),
            capacity=self._capacity,
            heartbeat_interval_s=HEARTBEAT_S,
        )

    async def WatchStatus(self, request: Any, context: Any) -> AsyncIterator[node_pb2.NodeStatus]:
        seq = 1
        yield self._status(seq, heartbeat=False)
        while True:
            self._changed.clear()
            changed = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), HEARTBEAT_S)
                changed = True
            seq += 1
            yield self._status(seq, heartbeat=not changed)


async def start_sims(count: int, acknowledged: dict[str, float]) -> tuple[list[Any], list[str]]:
    servers: list[Any] = []
    addresses: list[str] = []
    for index in range(count):
        server = grpc.aio.server(options=server_options())
        node_pb2_grpc.add_NodeServiceServicer_to_server(
            SimNode(node_id(index), acknowledged), server
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    return servers, addresses


# -- the controller process -----------------------------------------------------------------


def start_controller(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli.main",
            "controller",
            "--listen",
            address,
            "--data-dir",
            str(data_dir),
            "--no-mdns",
            "--gateway-listen",
            "off",
            # The simulated nodes serve plaintext gRPC (no certificates): this measures
            # scheduling and status handling, not TLS.
            "--insecure",
            "--join-listen",
            "off",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, address


async def wait_serving(address: str, timeout: float = 30.0) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"controller at {address} did not start")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


@dataclass
class FleetFigures:
    nodes: int
    connected_s: float
    apply_rpc_ms: float
    all_acknowledged_s: float
    all_ready_s: float
    steady_cpu_percent: float
    steady_rss_mib: float
    cpu_ms_per_heartbeat: float


async def bench_fleet(count: int, steady_s: float, data_dir: Path) -> FleetFigures:
    acknowledged: dict[str, float] = {}
    servers, addresses = await start_sims(count, acknowledged)
    process, address = start_controller(data_dir)
    proc = psutil.Process(process.pid)
    try:
        await wait_serving(address)
        async with grpc.aio.insecure_channel(address, options=client_options()) as channel:
            api = controller_pb2_grpc.ControllerServiceStub(channel)
            text = manifest(addresses)
            start = time.perf_counter()
            await api.Apply(controller_pb2.ApplyRequest(manifest=text, source="scale.yaml"))
            applied = time.perf_counter()
            # The nodes are named by the manifest: the controller connects, then pushes.
            connected = None
            while len(acknowledged) < count:
                if connected is None:
                    nodes = await api.ListNodes(controller_pb2.ListNodesRequest())
                    if sum(n.state == common_pb2.NODE_STATE_READY for n in nodes.nodes) == count:
                        connected = time.perf_counter() - start
                if time.perf_counter() - start > 300:
                    raise RuntimeError(f"only {len(acknowledged)}/{count} nodes acknowledged")
                await asyncio.sleep(0.01)
            acked = max(acknowledged.values()) - start
            while True:
                agents = await api.ListAgents(controller_pb2.ListAgentsRequest())
                if agents.agents and all(a.ready_replicas >= 1 for a in agents.agents):
                    break
                if time.perf_counter() - start > 300:
                    raise RuntimeError("agents not ready within 300 s")
                await asyncio.sleep(0.05)
            ready = time.perf_counter() - start
            if connected is None:
                connected = acked
            # Steady state: let the rollout's aftermath settle, then measure.
            await asyncio.sleep(2.0)
            cpu_before, wall_before = cpu_seconds(proc), time.perf_counter()
            rss: list[int] = []
            while time.perf_counter() - wall_before < steady_s:
                rss.append(proc.memory_info().rss)
                await asyncio.sleep(0.5)
            cpu = cpu_seconds(proc) - cpu_before
            wall = time.perf_counter() - wall_before
        heartbeats = count * wall / HEARTBEAT_S
        return FleetFigures(
            nodes=count,
            connected_s=round(connected, 3),
            apply_rpc_ms=round((applied - start) * 1000, 1),
            all_acknowledged_s=round(acked, 3),
            all_ready_s=round(ready, 3),
            steady_cpu_percent=round(100 * cpu / wall, 1),
            steady_rss_mib=round(statistics.median(rss) / 2**20, 1),
            cpu_ms_per_heartbeat=round(1000 * cpu / heartbeats, 3),
        )
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(20)
        if process.poll() is None:
            process.kill()
        await asyncio.gather(*(s.stop(0) for s in servers))


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / GiB, 1),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="50,200,500", help="fleet sizes, comma-separated")
    parser.add_argument("--steady", type=float, default=10.0, help="seconds of steady state")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")]
    scheduler = {n: bench_scheduler(n) for n in sizes}
    fleets: dict[int, FleetFigures] = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="edgefleet-scale-") as tmp:
            fleets[n] = asyncio.run(bench_fleet(n, args.steady, Path(tmp)))
        print(f"  {n} nodes done", file=sys.stderr)
    header = (
        "| nodes | placements | schedule from empty | placements/s | steady pass "
        "| all connected | apply → all acknowledged | → all ready | controller CPU "
        "| controller RSS | CPU per heartbeat |"
    )
    print(header)
    print("|---" * 11 + "|")
    for n in sizes:
        s, f = scheduler[n], fleets[n]
        print(
            f"| {n} | {s.placements} | {s.from_empty_ms:.1f} ms | {s.placements_per_s:,.0f} "
            f"| {s.steady_pass_ms:.1f} ms | {f.connected_s:.2f} s | {f.all_acknowledged_s:.2f} s "
            f"| {f.all_ready_s:.2f} s | {f.steady_cpu_percent:.1f} % | {f.steady_rss_mib:.0f} MiB "
            f"| {f.cpu_ms_per_heartbeat:.3f} ms |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "controller_scale",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "steady_seconds": args.steady,
        "note": "nodes are simulated: one real gRPC server each, in the benchmark's process",
        "results": [{"scheduler": asdict(scheduler[n]), "fleet": asdict(fleets[n])} for n in sizes],
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
