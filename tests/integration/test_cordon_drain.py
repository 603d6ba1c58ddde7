"""Draining a node under traffic, for real: no request fails, the node ends empty, and the
mark survives a controller restart until `edgectl node uncordon`.

A real controller process with its gateway on loopback, three real edge-nodes with the
llama.cpp runtime and SmolLM2-135M: edge-1 and edge-2 load the model and run the two
replicas of agent `assistant`; edge-3 is free to take work. Steady bounded traffic (the
official `openai` client, no retries: agent requests and model streams) runs while
`edgectl node drain edge-2` moves its work to edge-3. The drain's figures are printed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from edgefleet.v1 import common_pb2, node_pb2
from tests.integration.controller_process import ControllerProcess, describe, start_controller
from tests.integration.node_process import NodeProcess, start_node
from tests.integration.test_node_daemon import require_model

pytestmark = [pytest.mark.slow, pytest.mark.model]

AGENT = "assistant"
ALIAS = "smollm2-135m"
NODES = ("edge-1", "edge-2", "edge-3")
DRAINED = "edge-2"
MODEL_READY = common_pb2.MODEL_STATE_READY
TRIO = """\
deployment:
  type: distributed-edge
  name: trio
  models:
    - alias: smollm2-135m
      runtime: llama.cpp
  agents:
    - name: assistant
      model: smollm2-135m
      replicas: 2
  nodes:
    - id: edge-1
      models: [smollm2-135m]
      address: "{edge-1}"
    - id: edge-2
      models: [smollm2-135m]
      address: "{edge-2}"
    - id: edge-3
      address: "{edge-3}"
  coordination:
    failover: automatic
"""


@dataclass(frozen=True)
class Outcome:
    """One request through the gateway."""

    kind: str
    started: float
    """time.monotonic() when it was sent."""
    node: str
    """Who served it (X-EdgeFleet-Node), empty when it failed."""
    error: str = ""


class Traffic:
    """Two threads, one sending agent requests, one streaming from the model alias, each
    starting a request every `interval` seconds (or when the last one ends, if later)
    until stopped, `max_requests` or `max_seconds`; each returns the serving node."""

    def __init__(self, gateway_url: str, *, interval: float = 0.4, max_requests: int = 600,
                 max_seconds: float = 300.0) -> None:  # fmt: skip
        self._client = openai.OpenAI(
            base_url=gateway_url, api_key="unused", max_retries=0, timeout=60
        )
        self._interval, self._max_requests = interval, max_requests
        self._deadline = time.monotonic() + max_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._threads = [
            threading.Thread(target=self._loop, args=(kind, send), daemon=True)
            for kind, send in (("agent", self._agent), ("model-stream", self._stream))
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[Outcome]:
        """Stop, wait for the requests in flight, and return every outcome."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)
        self._client.close()
        return self.snapshot()

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def _loop(self, kind: str, send: Callable[[], str]) -> None:
        for _ in range(self._max_requests):
            if self._stop.is_set() or time.monotonic() > self._deadline:
                return
            started = time.monotonic()
            try:
                outcome = Outcome(kind, started, send())
            except (openai.OpenAIError, httpx.HTTPError, ValueError) as exc:
                outcome = Outcome(kind, started, "", f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.outcomes.append(outcome)
            self._stop.wait(max(0.0, started + self._interval - time.monotonic()))

    def _agent(self) -> str:
        raw = self._client.chat.completions.with_raw_response.create(
            model=AGENT,
            messages=[{"role": "user", "content": "Are you open today?"}],
            max_tokens=4,
            temperature=0,
        )
        if not raw.parse().choices:
            raise ValueError("an answer without choices")
        return raw.headers.get("x-edgefleet-node", "")

    def _stream(self) -> str:
        raw = self._client.chat.completions.with_raw_response.create(
            model=ALIAS,
            messages=[{"role": "user", "content": "Name a fruit."}],
            max_tokens=4,
            temperature=0,
            stream=True,
        )
        with raw.parse() as stream:
            chunks = sum(1 for _ in stream)
        if not chunks:
            raise ValueError("a stream without chunks")
        return raw.headers.get("x-edgefleet-node", "")


def wait_for(what: str, check: Callable[[], Any], timeout: float, ctl: ControllerProcess) -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout:g}s: {what}\n{ctl.log()}")


def nodes_by_id(ctl: ControllerProcess) -> dict[str, Any]:
    return {n["id"]: n for n in ctl.json("get", "nodes")["nodes"]}


def all_ready(ctl: ControllerProcess) -> bool:
    states = [n["state"] for n in nodes_by_id(ctl).values()]
    return states == ["NODE_STATE_READY"] * len(NODES)


def agent_hosts(ctl: ControllerProcess) -> list[str]:
    agents = {a["name"]: a for a in ctl.json("get", "agents")["agents"]}
    return sorted(r["node_id"] for r in agents[AGENT]["replicas"])


def model_hosts(ctl: ControllerProcess) -> list[str]:
    models = {m["alias"]: m for m in ctl.json("get", "models")["models"]}
    return sorted(r["node_id"] for r in models[ALIAS]["replicas"])


def own_status(node: NodeProcess) -> node_pb2.NodeStatus:
    """What the node itself reports (its first status message)."""
    call = node.stub().WatchStatus(node_pb2.WatchStatusRequest(), timeout=10)
    try:
        status: node_pb2.NodeStatus = next(iter(call))
        return status
    finally:
        call.cancel()


def manifest(tmp_path: Path, nodes: dict[str, NodeProcess]) -> Path:
    path = tmp_path / "trio.yaml"
    path.write_text(TRIO.format_map({n: nodes[n].address for n in NODES}))
    return path


@pytest.mark.timeout(900)
def test_draining_a_node_under_traffic_fails_no_request_and_survives_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_model()
    nodes = {n: start_node(n, tmp_path / n) for n in NODES}
    static = {n: nodes[n].address for n in NODES}
    ctl = start_controller(tmp_path / "controller", nodes=static, gateway=True)
    try:
        # Every node ready before the manifest: the two replicas go where the model is.
        wait_for("every node is ready", lambda: all_ready(ctl), 60, ctl)
        ctl.edgectl(
            "apply", "-f", str(manifest(tmp_path, nodes)), "--wait", "--timeout", "180", timeout=240
        )
        assert agent_hosts(ctl) == ["edge-1", DRAINED]

        traffic = Traffic(ctl.gateway_url)
        try:
            wait_for("traffic flows", lambda: len(traffic.snapshot()) >= 4, 60, ctl)
            began = time.monotonic()
            drain = ctl.edgectl("node", "drain", DRAINED, "--timeout", "300", timeout=360)
            drained_s = time.monotonic() - began
            time.sleep(2.0)  # traffic after the drain, on the nodes that took over
        finally:
            outcomes = traffic.stop()
        during = [o for o in outcomes if began <= o.started <= began + drained_s]
        failed = [o for o in outcomes if o.error]
        with capsys.disabled():
            print(
                f"\ndrain of {DRAINED} under traffic: {drained_s:.1f}s from `edgectl node drain` "
                f"to the node empty; {len(during)} requests during the drain "
                f"({sum(o.kind == 'agent' for o in during)} agent, "
                f"{sum(o.kind == 'model-stream' for o in during)} model streams), "
                f"{len([o for o in during if o.error])} failed; {len(outcomes)} requests in "
                f"all, {len(failed)} failed\n$ edgectl node drain {DRAINED}\n{drain.stdout}"
            )
        assert "drained in" in drain.stdout, describe(drain)
        assert "moving to edge-3" in drain.stdout, describe(drain)
        assert failed == [], failed
        assert during, "requests ran during the drain"
        served_after = {o.node for o in outcomes if o.started > began + drained_s}
        assert DRAINED not in served_after

        # The node's own word: it runs nothing.
        status = own_status(nodes[DRAINED])
        assert (list(status.models), list(status.agents)) == ([], [])
        assert agent_hosts(ctl) == ["edge-1", "edge-3"]
        listed = nodes_by_id(ctl)[DRAINED]
        assert (listed["state"], listed["mark"], listed["drained"]) == (
            "NODE_STATE_DRAINING",
            "draining",
            True,
        )
        table = ctl.edgectl("get", "nodes").stdout
        assert any(line.split()[:2] == [DRAINED, "draining"] for line in table.splitlines())
        events = ctl.edgectl("events", "--object", f"node/{DRAINED}", "-o", "json").stdout
        reasons = [json.loads(line)["reason"] for line in events.splitlines()]
        assert {"NodeDraining", "NodeDrained"} <= set(reasons), reasons
        assert reasons.index("NodeDraining") < reasons.index("NodeDrained"), reasons

        # A restarted controller keeps the mark, and gives the node nothing.
        ctl.terminate()
        ctl = start_controller(tmp_path / "controller", nodes=static, gateway=True)
        wait_for(
            f"{DRAINED} is back, draining",
            lambda: nodes_by_id(ctl).get(DRAINED, {}).get("state") == "NODE_STATE_DRAINING",
            60,
            ctl,
        )
        wait_for("the agent is placed", lambda: agent_hosts(ctl) == ["edge-1", "edge-3"], 60, ctl)
        # Its pinned model stays away: another node stands in while it is marked.
        assert model_hosts(ctl) == ["edge-1", "edge-3"]
        status = own_status(nodes[DRAINED])
        assert (list(status.models), list(status.agents)) == ([], [])

        # Uncordoned: eligible again; failback brings its pinned model back.
        back = ctl.edgectl("node", "uncordon", DRAINED)
        assert back.stdout == f"node {DRAINED} uncordoned: it takes new work again\n"
        assert nodes_by_id(ctl)[DRAINED]["mark"] == ""
        assert DRAINED in model_hosts(ctl)
        wait_for(
            f"{ALIAS} is ready on {DRAINED} again",
            lambda: [m for m in own_status(nodes[DRAINED]).models if m.state == MODEL_READY],
            180,
            ctl,
        )
    finally:
        ctl.close()
        for node in nodes.values():
            node.close()
