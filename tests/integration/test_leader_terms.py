"""A real edge-node and two controllers (played by the test over mutual TLS): the node follows
the newest leader term it has seen, refuses an older leader's pushes without changing
anything, and still follows that term after a restart."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from edgefleet.v1 import node_pb2, node_pb2_grpc
from tests.integration.node_process import start_node, unique_id

pytestmark = pytest.mark.slow

OLD, NEW = "controller-old", "controller-new"


def apply(
    stub: node_pb2_grpc.NodeServiceStub, generation: int, term: int, controller: str
) -> node_pb2.ApplyStateResponse:
    request = node_pb2.ApplyStateRequest(
        generation=generation,
        controller_id=controller,
        leader_term=term,
        state=node_pb2.NodeDesiredState(),
    )
    answer: node_pb2.ApplyStateResponse = stub.ApplyState(request, timeout=30)
    return answer


def first_status(
    stub: node_pb2_grpc.NodeServiceStub, term: int, controller: str
) -> node_pb2.NodeStatus:
    """The snapshot a status stream opens with (the stream is then closed)."""
    stream = stub.WatchStatus(
        node_pb2.WatchStatusRequest(controller_id=controller, leader_term=term), timeout=30
    )
    try:
        status: node_pb2.NodeStatus = next(stream)
    finally:
        stream.cancel()
    return status


def saved_generation(data_dir: Path) -> int:
    generation: int = json.loads((data_dir / "desired-state.json").read_text())["generation"]
    return generation


def test_a_node_refuses_an_older_leader_and_keeps_its_term_across_a_restart(
    tmp_path: Path,
) -> None:
    node_id, data_dir = unique_id("terms"), tmp_path / "node"
    with start_node(node_id, data_dir) as node:
        stub = node.stub()
        assert apply(stub, 1, 5, OLD).generation == 1
        assert stub.GetInfo(node_pb2.GetInfoRequest(), timeout=10).leader_term == 5

        # The new leader's status stream raises the node's term before its first status.
        assert first_status(stub, 7, NEW).leader_term == 7

        with pytest.raises(grpc.RpcError) as refused:
            apply(stub, 2, 5, OLD)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, node.log()
        details = refused.value.details() or ""
        for words in (OLD, "term 5", "term 7"):
            assert words in details, details
        assert "a newer leader took over" in details

        # Nothing changed: neither the desired state in force nor the one on disk.
        info = stub.GetInfo(node_pb2.GetInfoRequest(), timeout=10)
        assert (info.generation, info.controller_id, info.leader_term) == (1, OLD, 7)
        assert saved_generation(data_dir) == 1
        observed = first_status(stub, 0, "standby")  # an observer changes nothing
        assert (observed.leader_term, observed.refused_pushes) == (7, 1)

        table = node_pb2.RoutingTable(generation=3, controller_id=OLD)
        with pytest.raises(grpc.RpcError) as refused_routes:
            stub.ApplyRoutes(node_pb2.ApplyRoutesRequest(table=table, leader_term=5), timeout=30)
        assert refused_routes.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        observed = first_status(stub, 0, "standby")
        assert (observed.routes_generation, observed.refused_pushes) == (0, 2)
        line = node.process.expect("push refused: it comes from an older leader", 10).string
        assert "push_term=5" in line, line
        assert "leader_term=7" in line, line

        assert apply(stub, 2, 7, NEW).generation == 2
        node.terminate()

    with start_node(node_id, data_dir) as node:
        stub = node.stub()
        info = stub.GetInfo(node_pb2.GetInfoRequest(), timeout=10)
        assert (info.leader_term, info.generation) == (7, 2), node.log()
        with pytest.raises(grpc.RpcError) as refused:
            apply(stub, 3, 0, OLD)  # no term at all, once the node has seen one
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert first_status(stub, 0, "standby").refused_pushes == 1  # counted since start
        assert saved_generation(data_dir) == 2
        node.terminate()
