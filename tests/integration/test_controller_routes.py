"""The controller's side of the data plane, with real processes: it makes the routing
table, pushes it to every node, lists every gateway, and the nodes keep serving while it
is dead.

A real controller (secure, its gateway on loopback) and two real edge-nodes running the
llama.cpp runtime with SmolLM2-135M, each with its own gateway on loopback. Agent
`assistant` runs only on the first node, `helper` only on the second. Apps talk to a
node's gateway with the official `openai` client (`max_retries=0`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from edgefleet.v1 import node_pb2
from edgefleet_common.ports import free_port
from edgefleet_contract.routing_table import RoutingTable
from node_agent.routes_store import ROUTES_DIR, ROUTES_FILE
from tests.integration.controller_process import ControllerProcess, start_controller
from tests.integration.node_process import NodeProcess, start_node, unique_id
from tests.integration.test_node_daemon import require_model

pytestmark = [pytest.mark.slow, pytest.mark.model]

ALIAS = "smollm2-135m"
MANIFEST = """\
deployment:
  type: distributed-edge
  name: routes
  models:
    - alias: smollm2-135m
      runtime: llama.cpp
  agents:
    - name: assistant
      model: smollm2-135m
    - name: helper
      model: smollm2-135m
  nodes:
    - id: "{one}"
      agents: [assistant]
      models: [smollm2-135m]
      address: "{one_address}"
    - id: "{two}"
      agents: [helper]
      models: [smollm2-135m]
      address: "{two_address}"
"""
AFTER_KILL_REQUESTS = 6
WAIT_S = 120.0
"""Bound on waiting for what must happen (never asserted as a timing)."""


@dataclass
class Pair:
    """Two nodes with their gateway ports."""

    one: NodeProcess
    two: NodeProcess
    gateway_one: int
    gateway_two: int

    def client(self, port: int) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60
        )


def status(node: NodeProcess) -> node_pb2.NodeStatus:
    """The node's current status (the first message of its status stream)."""
    stream = node.stub().WatchStatus(node_pb2.WatchStatusRequest(controller_id="t"), timeout=10)
    try:
        return next(stream)
    finally:
        stream.cancel()


def held_table(node: NodeProcess) -> RoutingTable:
    """The routing table the node keeps on disk."""
    return RoutingTable.model_validate_json((node.data_dir / ROUTES_DIR / ROUTES_FILE).read_text())


def ask(client: openai.OpenAI, model: str) -> str:
    """The node that served one short chat request (X-EdgeFleet-Node)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    assert raw.parse().choices[0].message.content is not None
    return raw.headers["x-edgefleet-node"]


def endpoints_current(ctl: ControllerProcess, pair: Pair) -> dict[str, Any]:
    """`get endpoints -o json` once both nodes route with the current table, which lists
    both agents ready (bounded wait)."""
    deadline = time.monotonic() + WAIT_S
    reply: dict[str, Any] = {}
    while time.monotonic() < deadline:
        reply = ctl.json("get", "endpoints")
        current = int(reply.get("routes_generation", 0))
        nodes = [e for e in reply.get("endpoints", []) if e["kind"] == "node"]
        on_current = current and all(int(e.get("routes_generation", 0)) == current for e in nodes)
        if len(nodes) == 2 and on_current:
            table = held_table(pair.one)
            if table.replicas("helper", "agent") and table.replicas("assistant", "agent"):
                return reply
        time.sleep(0.5)
    raise AssertionError(f"nodes never routed with the current table: {reply}\n{ctl.log()}")


def fingerprint(node: NodeProcess) -> tuple[set[int], dict[str, int]]:
    """What changes if the node restarted its model or an agent: its llama.cpp server
    processes, and its agents' request counters."""
    servers = {p.pid for p in node.runtime_servers()}
    return servers, {a.name: a.requests_total for a in status(node).agents}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    require_model()
    ports = free_port(), free_port()
    nodes = [
        start_node(
            unique_id(f"rt{i}"),
            tmp_path / f"n{i}",
            extra_args=["--gateway-listen", f"127.0.0.1:{port}"],
        )
        for i, port in enumerate(ports, 1)
    ]
    try:
        yield Pair(nodes[0], nodes[1], *ports)
    finally:
        for node in nodes:
            node.close()


@pytest.mark.timeout(420)
def test_nodes_route_with_the_controllers_table_and_keep_serving_without_it(
    tmp_path: Path, pair: Pair
) -> None:
    manifest = tmp_path / "routes.yaml"
    manifest.write_text(
        MANIFEST.format(
            one=pair.one.node_id,
            one_address=pair.one.address,
            two=pair.two.node_id,
            two_address=pair.two.address,
        )
    )
    ctl = start_controller(tmp_path / "controller", gateway=True)
    try:
        ctl.edgectl("apply", "-f", str(manifest), "--wait", "--timeout", "180", timeout=200)
        before = endpoints_current(ctl, pair)
        generation = int(before["routes_generation"])
        assert status(pair.one).routes_generation == generation
        assert status(pair.two).routes_generation == generation

        # helper runs only on the second node: the first node's gateway sends it there.
        with pair.client(pair.gateway_one) as client:
            assert ask(client, "helper") == pair.two.node_id
            assert ask(client, "assistant") == pair.one.node_id

        listed = ctl.edgectl("get", "endpoints").stdout.splitlines()
        assert listed[0].split() == ["NAME", "KIND", "URL", "STATE", "ROUTES"]
        rows = [line.split() for line in listed[1:] if line.strip()]
        assert [r[0] for r in rows] == ["controller", *sorted([pair.one.node_id, pair.two.node_id])]
        assert all(r[-1] == "current" for r in rows), listed
        urls = {e["name"]: e.get("url", "") for e in before["endpoints"]}
        assert urls[pair.one.node_id] == f"http://127.0.0.1:{pair.gateway_one}/v1"
        assert urls["controller"] == ctl.gateway_url

        table = held_table(pair.one)
        running = fingerprint(pair.one), fingerprint(pair.two)
        ctl.kill()

        # Requests keep flowing through a node's gateway, to itself and to its peer.
        with pair.client(pair.gateway_two) as client:
            served = [
                ask(client, "assistant" if n % 2 else "helper") for n in range(AFTER_KILL_REQUESTS)
            ]
        expected = [pair.two.node_id, pair.one.node_id] * (AFTER_KILL_REQUESTS // 2)
        assert served == expected

        ctl = start_controller(tmp_path / "controller", gateway=True)
        after = endpoints_current(ctl, pair)
        restarted = held_table(pair.one)
        if restarted.content_key() == table.content_key():
            assert int(after["routes_generation"]) == generation
        else:
            assert int(after["routes_generation"]) > generation
        # Nothing restarted anywhere: the same llama.cpp servers, counters that only grew.
        for node, (servers, counts) in zip((pair.one, pair.two), running, strict=True):
            now_servers, now_counts = fingerprint(node)
            assert now_servers == servers
            assert all(now_counts.get(name, -1) >= count for name, count in counts.items())
    finally:
        ctl.close()
