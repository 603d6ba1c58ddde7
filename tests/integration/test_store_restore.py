"""A controller whose SQLite store came back from an old backup: the node it commands follows
a newer leader term than the restored store remembers (and would refuse its pushes); the
controller sees the node's term in its status, takes a term above it and carries on."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from edgefleet.v1 import node_pb2
from tests.integration.controller_process import ControllerProcess, start_controller
from tests.integration.node_process import NodeProcess, start_node, unique_id

pytestmark = pytest.mark.slow

WAIT_S = 30.0


def status(node: NodeProcess) -> node_pb2.NodeStatus:
    """The node's status as it opens a stream to an observer (leader term 0)."""
    stream = node.stub().WatchStatus(node_pb2.WatchStatusRequest(controller_id="t"), timeout=10)
    try:
        answer: node_pb2.NodeStatus = next(stream)
        return answer
    finally:
        stream.cancel()


def control_plane_term(ctl: ControllerProcess) -> int:
    term: int = int(ctl.json("status")["control_plane"].get("term", 0))
    return term


def follows(node: NodeProcess, ctl: ControllerProcess) -> bool:
    """Whether the node follows the controller's term and routes with its table."""
    term = control_plane_term(ctl)
    seen = status(node)
    return term > 0 and seen.leader_term == term and seen.routes_generation > 0


def wait_follows(what: str, node: NodeProcess, ctl: ControllerProcess) -> None:
    deadline = time.monotonic() + WAIT_S
    while not follows(node, ctl):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT_S:.0f}s\n{ctl.log()}")
        time.sleep(0.2)


def test_a_restored_store_takes_a_term_above_what_the_node_follows(tmp_path: Path) -> None:
    data = tmp_path / "controller"
    with start_node(unique_id("restore"), tmp_path / "node") as node:
        nodes = {node.node_id: node.address}
        ctl = start_controller(data, nodes=nodes)
        try:
            wait_follows("the node follows the first term", node, ctl)
            first = control_plane_term(ctl)
        finally:
            ctl.terminate()
        backup = tmp_path / "backup"
        shutil.copytree(data, backup)

        for _ in range(2):  # two more starts: two more terms, the node follows each
            ctl = start_controller(data, nodes=nodes)
            try:
                wait_follows("the node follows the restarted controller", node, ctl)
            finally:
                ctl.terminate()
        newest = status(node).leader_term
        assert newest == first + 2

        shutil.rmtree(data)
        shutil.copytree(backup, data)
        ctl = start_controller(data, nodes=nodes)
        try:
            # The restored counter gives first + 1, below the node's term: outranked.
            wait_follows("the restored controller outranks the node's term", node, ctl)
            assert control_plane_term(ctl) > newest
        finally:
            ctl.terminate()
