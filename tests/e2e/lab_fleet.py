"""A real fleet in a lab: edge-nodes in network namespaces, a controller that finds them
over mDNS across the bridge, and bounded traffic through its OpenAI gateway.

Used by the fault tests (`tests/e2e/test_failover_faults.py`) and the failover
benchmark (`bench/failover.py`). Every node is a real `edge-node` process with the
llama.cpp runtime and SmolLM2-135M, started with `ip netns exec` inside its own
host; the controller runs in the root namespace, joined to the lab through the
bridge address `.254`, with its mDNS bound to that address only (nothing is
multicast on the machine's own interfaces). The controller's gateway listens on
loopback; every node's gateway listens on its lab address (HTTPS with the node's
cluster certificate, API keys from `edgectl apikey create`), reachable from the
test process through the bridge.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc
import httpx
import httpx2
import openai

from edgefleet.v1 import (
    common_pb2,
    controller_pb2,
    controller_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
)
from edgefleet_common.grpc_transport import client_options
from orchestrator.cli.output import agent_state, node_state
from tests.cluster_pki import node_channel
from tests.e2e.gateway_tls import node_gateway_client
from tests.integration.controller_process import (
    ControllerProcess,
    smollm2_catalog,
    start_controller,
)
from tests.integration.node_process import NodeProcess, start_node
from tests.netlab import Host, Lab
from tests.polling import wait_for

AGENT = "desk"
ALIAS = "smollm2-135m"
NODE_PORT = 7443
NODE_GATEWAY_PORT = 7480
NODES = ("n1", "n2", "n3")

# Two replicas of the agent, preferred on n1 and n2; n3 has the model loaded and
# room, so it is where a failed-over replica goes (no model load on the way).
MANIFEST = f"""\
deployment:
  type: distributed-edge
  name: lab-fleet
  models:
    - alias: "{ALIAS}"
      runtime: llama.cpp
      tasks: ["conversation"]
  agents:
    - name: "{AGENT}"
      model: "{ALIAS}"
      instructions: "You answer shop customers in one short sentence."
      tools: ["time"]
      replicas: 2
  nodes:
    - id: "n1"
      agents: ["{AGENT}"]
      models: ["{ALIAS}"]
    - id: "n2"
      agents: ["{AGENT}"]
      models: ["{ALIAS}"]
    - id: "n3"
      models: ["{ALIAS}"]
  coordination:
    load_balancing: true
    failover: automatic
    heartbeat_interval: 1s
    failure_timeout: 3s
    failback: true
"""

READY = common_pb2.AGENT_STATE_READY


# -- observing the fleet ---------------------------------------------------------------------


def running_agents(node_id: str, address: str, timeout: float = 3.0) -> dict[str, int]:
    """What a node itself reports: agent name → AgentState, from its first status message.

    Asked of the node directly, not the controller, so a fenced-off replica the
    controller no longer counts is still seen.
    """
    return {a.name: a.state for a in node_status(node_id, address, timeout).agents}


def node_status(node_id: str, address: str, timeout: float = 3.0) -> node_pb2.NodeStatus:
    """A node's own current status (the first message of its status stream)."""
    with node_channel(node_id, address) as channel:
        stream = node_pb2_grpc.NodeServiceStub(channel).WatchStatus(
            node_pb2.WatchStatusRequest(controller_id="lab-observer"), timeout=timeout
        )
        try:
            first: node_pb2.NodeStatus = next(iter(stream))
            return first
        finally:
            stream.cancel()


@dataclass
class LabFleet:
    """Three edge-nodes in namespaces, a controller with its gateway, the manifest applied."""

    lab: Lab
    tmp: Path
    catalog: Path
    controller: ControllerProcess
    hosts: dict[str, Host]
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    _channel: grpc.Channel | None = None

    # -- processes ---------------------------------------------------------------------

    def start_node(self, name: str) -> NodeProcess:
        """Start (or restart, same data folder and port) the edge-node on host `name`."""
        host = self.hosts[name]
        node = start_node(
            name,
            self.tmp / f"node-{name}",
            listen_host=host.ip,
            port=NODE_PORT,
            catalog=self.catalog,
            mdns_interfaces=[host.ip],
            extra_args=["--gateway-listen", f"{host.ip}:{NODE_GATEWAY_PORT}"],
            prefix=["ip", "netns", "exec", host.netns],
            ready_timeout=60,
        )
        self.nodes[name] = node
        return node

    def kill(self, name: str) -> None:
        """SIGKILL the node daemon (its model servers die with it)."""
        self.nodes.pop(name).kill()

    def kill_controller(self) -> None:
        """SIGKILL the controller, as a power cut would."""
        self._drop_channel()
        self.controller.kill()

    def restart_controller(self) -> ControllerProcess:
        """Start the controller again with the same data folder, API address and gateway
        address (so clients of either need not be told)."""
        self._drop_channel()
        old = self.controller
        old.close()
        gateway = old.gateway_url.removeprefix("http://").removesuffix("/v1")
        assert self.lab.ip is not None, "the lab must be joined"
        self.controller = start_controller(
            old.data_dir,
            mdns_interfaces=[self.lab.ip],
            port=int(old.address.rsplit(":", 1)[1]),
            gateway=True,
            # The later option wins: the same gateway address as before.
            extra_args=["--gateway-listen", gateway],
        )
        self.controller.gateway_url = old.gateway_url
        return self.controller

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def api_key(self, description: str = "lab traffic") -> str:
        """A new gateway API key, made with `edgectl apikey create`."""
        made = self.controller.edgectl("apikey", "create", "--description", description)
        return made.stdout.strip()

    def node_gateway_url(self, name: str) -> str:
        """The OpenAI base URL of node `name`'s gateway (HTTPS, on its lab address)."""
        return f"https://{self.hosts[name].ip}:{NODE_GATEWAY_PORT}/v1"

    def node_client(self, name: str, api_key: str, timeout: float = 30.0) -> openai.OpenAI:
        """An `openai` client (no retries) on node `name`'s gateway."""
        return openai.OpenAI(
            base_url=self.node_gateway_url(name),
            api_key=api_key,
            max_retries=0,
            timeout=timeout,
            http_client=node_gateway_client(name, timeout),
        )

    def node_status(self, name: str) -> node_pb2.NodeStatus:
        """What node `name` itself reports now."""
        return node_status(name, self.nodes[name].address)

    def close(self) -> None:
        """Stop everything this fleet started; the lab removes the hosts."""
        if self._channel is not None:
            self._channel.close()
        self.controller.close()
        for node in self.nodes.values():
            node.close()

    # -- what the controller says --------------------------------------------------------

    @property
    def api(self) -> controller_pb2_grpc.ControllerServiceStub:
        """A stub on the controller's API (one channel, reused)."""
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.controller.address, options=client_options())
        return controller_pb2_grpc.ControllerServiceStub(self._channel)

    def node_states(self) -> dict[str, str]:
        """Node id → `ready`, `suspect`, `not-ready`, … as the controller sees it."""
        nodes = self.api.ListNodes(controller_pb2.ListNodesRequest(), timeout=5).nodes
        return {n.id: node_state(n.state) for n in nodes}

    def agent_replicas(self, agent: str = AGENT) -> dict[str, str]:
        """Node id → replica state of `agent`, as the controller sees it."""
        for view in self.api.ListAgents(controller_pb2.ListAgentsRequest(), timeout=5).agents:
            if view.name == agent:
                return {r.node_id: agent_state(r.state) for r in view.replicas}
        return {}

    def ready_on(self, agent: str = AGENT) -> set[str]:
        """Nodes where the controller sees a ready replica of `agent`."""
        return {n for n, state in self.agent_replicas(agent).items() if state == "ready"}

    def events(self, after_id: int = 0) -> list[controller_pb2.Event]:
        """The controller's stored events after `after_id`."""
        stream = self.api.WatchEvents(
            controller_pb2.WatchEventsRequest(after_id=after_id, follow=False), timeout=10
        )
        return list(stream)

    def last_event_id(self) -> int:
        """The id of the newest stored event (0 when there is none)."""
        events = self.events()
        return events[-1].id if events else 0

    def reported_holders(self, names: Sequence[str] | None = None, agent: str = AGENT) -> set[str]:
        """The nodes (of `names`, default all running) that themselves report `agent` ready."""
        asked = names if names is not None else list(self.nodes)
        return {n for n in asked if running_agents(n, self.nodes[n].address).get(agent) == READY}

    def explain(self) -> str:
        """Node and replica states plus the controller's log tail, for failure messages."""
        try:
            states = f"nodes {self.node_states()}\nreplicas {self.agent_replicas()}"
        except grpc.RpcError as exc:
            states = f"(controller did not answer: {exc.code()})"
        return f"{states}\n{self.controller.log(80)}"


@contextlib.contextmanager
def lab_fleet(lab: Lab, tmp: Path) -> Iterator[LabFleet]:
    """Build the hosts, start the nodes and the controller, apply `MANIFEST`, wait until
    both agent replicas are ready on n1 and n2; everything is stopped on exit."""
    hosts = {name: lab.add_host(name) for name in NODES}
    catalog = smollm2_catalog(tmp / "catalog.yaml", [ALIAS])
    assert lab.ip is not None, "the lab must be joined"
    controller = start_controller(tmp / "controller", mdns_interfaces=[lab.ip], gateway=True)
    fleet = LabFleet(lab=lab, tmp=tmp, catalog=catalog, controller=controller, hosts=hosts)
    try:
        starters = [threading.Thread(target=fleet.start_node, args=(n,)) for n in NODES]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join()
        assert set(fleet.nodes) == set(NODES), f"nodes failed to start\n{fleet.explain()}"
        wait_for(
            "all three nodes discovered over mDNS and ready",
            lambda: all(fleet.node_states().get(n) == "ready" for n in NODES),
            30,
            fleet.explain,
        )
        manifest = tmp / "lab-fleet.yaml"
        manifest.write_text(MANIFEST)
        controller.edgectl("apply", "-f", str(manifest), "--wait", "--timeout", "180", timeout=200)
        wait_for(
            "the agent ready on its preferred nodes",
            lambda: fleet.ready_on() == {"n1", "n2"},
            60,
            fleet.explain,
        )
        yield fleet
    finally:
        fleet.close()


# -- traffic ---------------------------------------------------------------------------------

Kind = Literal["agent", "model-stream"]


@dataclass(frozen=True)
class Outcome:
    """One request through the gateway and how it ended."""

    kind: Kind
    started: float
    """time.time() when it was sent."""
    ended: float
    node: str
    """Who served it (the gateway's X-EdgeFleet-Node header), or "" when it failed."""
    error: str = ""
    """Empty when it succeeded."""
    cut_mid_stream: bool = False
    """It failed after part of the answer reached the client: not retriable by anyone."""

    @property
    def ok(self) -> bool:
        """True when the whole answer arrived."""
        return not self.error


class Traffic:
    """Steady, bounded traffic through the gateway with the official `openai` client.

    Two threads: one sends whole (non-streamed) requests to the agent, one streams
    from the model alias; each starts a request every `interval` seconds (or as
    soon as the previous one ends, if later). Each stops at `stop()`, after
    `max_requests`, or after `max_seconds`, whichever comes first. A gateway off
    loopback takes an `api_key` and an `http_client` that trusts its certificate
    (`node_gateway_client`).
    """

    def __init__(
        self,
        gateway_url: str,
        *,
        interval: float = 0.5,
        max_requests: int = 2000,
        max_seconds: float = 600.0,
        request_timeout: float = 30.0,
        api_key: str = "unused",
        http_client: httpx2.Client | None = None,
    ) -> None:
        self._client = openai.OpenAI(
            base_url=gateway_url,
            api_key=api_key,
            max_retries=0,
            timeout=request_timeout,
            http_client=http_client,
        )
        self._interval = interval
        self._max_requests = max_requests
        self._deadline = time.monotonic() + max_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._threads = [
            threading.Thread(target=self._loop, args=(kind,), name=f"traffic-{kind}", daemon=True)
            for kind in ("agent", "model-stream")
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        """Stop sending, wait for the requests in flight, return every outcome so far."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self._client.close()
        return self.snapshot()

    def snapshot(self) -> list[Outcome]:
        """The outcomes recorded so far, in the order they ended."""
        with self._lock:
            return list(self.outcomes)

    def _loop(self, kind: Kind) -> None:
        sent = 0
        next_at = time.monotonic()
        while not self._stop.is_set() and sent < self._max_requests:
            if time.monotonic() > self._deadline:
                return
            outcome = self._agent() if kind == "agent" else self._stream()
            with self._lock:
                self.outcomes.append(outcome)
            sent += 1
            next_at += self._interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _agent(self) -> Outcome:
        started = time.time()
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=AGENT,
                messages=[{"role": "user", "content": "Are you open today?"}],
                max_tokens=8,
                temperature=0,
            )
            reply = raw.parse()
            if not reply.choices:
                raise ValueError("an answer without choices")
            return Outcome("agent", started, time.time(), raw.headers.get("x-edgefleet-node", ""))
        except (openai.OpenAIError, httpx.HTTPError, httpx2.HTTPError, ValueError) as exc:
            return Outcome("agent", started, time.time(), "", error=_describe(exc))

    def _stream(self) -> Outcome:
        started = time.time()
        chunks = 0
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=ALIAS,
                messages=[{"role": "user", "content": "Name a fruit."}],
                max_tokens=8,
                temperature=0,
                stream=True,
            )
            node = raw.headers.get("x-edgefleet-node", "")
            with raw.parse() as stream:
                for _ in stream:
                    chunks += 1
            if chunks == 0:
                raise ValueError("a stream without chunks")
            return Outcome("model-stream", started, time.time(), node)
        except (openai.OpenAIError, httpx.HTTPError, httpx2.HTTPError, ValueError) as exc:
            return Outcome(
                "model-stream",
                started,
                time.time(),
                "",
                error=_describe(exc),
                cut_mid_stream=chunks > 0,
            )


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {exc}"[:300]


def failures(outcomes: Sequence[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
    """(retriable failures — should be zero, cut-mid-stream failures — reported)."""
    failed = [o for o in outcomes if not o.ok]
    return [o for o in failed if not o.cut_mid_stream], [o for o in failed if o.cut_mid_stream]
