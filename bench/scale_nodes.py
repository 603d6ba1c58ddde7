"""Simulated edge-nodes for bench/controller_scale.py: each a real gRPC server on its own
127.0.0.1 port, with the real node API and wire format, answering GetInfo, ApplyState,
ApplyRoutes and WatchStatus like an edge-node whose models load at once. No model runs and
no gateway routes with the table it receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from edgefleet.v1 import common_pb2, node_pb2, node_pb2_grpc
from edgefleet_common.grpc_transport import server_options
from edgefleet_contract.wire import timestamp

GiB = 1024**3
HEARTBEAT_S = 1.0
"""How often a simulated node sends a heartbeat on its status stream."""
MODEL = common_pb2.MODEL_STATE_READY
AGENT = common_pb2.AGENT_STATE_READY


def node_id(index: int) -> str:
    """The id of the simulated node number `index`."""
    return f"sim-{index:04d}"


class SimNode(node_pb2_grpc.NodeServiceServicer):
    """The node API of an edge-node whose models load instantly (no runtime)."""

    def __init__(self, ident: str, acknowledged: dict[str, float]) -> None:
        self.ident = ident
        self.generation = 0
        self.routes_generation = 0
        self.leader_term = 0
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
        self.leader_term = max(self.leader_term, request.leader_term)
        self.state = request.state
        if request.state.agents:
            self._acknowledged.setdefault(self.ident, time.perf_counter())
        self._changed.set()
        return node_pb2.ApplyStateResponse(generation=self.generation)

    async def ApplyRoutes(self, request: Any, context: Any) -> node_pb2.ApplyRoutesResponse:
        if request.table.generation < self.routes_generation:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "older routing table")
        self.routes_generation = request.table.generation
        self.leader_term = max(self.leader_term, request.leader_term)
        self._changed.set()
        return node_pb2.ApplyRoutesResponse(generation=self.routes_generation)

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
            routes_generation=self.routes_generation,
            leader_term=self.leader_term,
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
    """Start `count` simulated nodes; their servers and `127.0.0.1:PORT` addresses. Each
    records in `acknowledged` when it first received a desired state with agents."""
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
