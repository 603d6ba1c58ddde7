"""A test double of our own controller API (`ControllerService`), for testing edgectl.

It is not the controller: it holds a canned, realistic fleet (three nodes, the
`distributed-edge` deployment half rolled out), keeps revisions in memory,
computes a naive plan from a manifest (each node loads its models and starts
its agents), validates manifests with the real loader (so INVALID_ARGUMENT
carries the same rendered diagnostics the controller sends), keeps node marks
(cordoned, draining) and answers drain progress from a script, issues admin
certificates from the test run's CA, records every request, and serves sync gRPC
on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from edgefleet.v1 import common_pb2, controller_pb2, controller_pb2_grpc, node_pb2
from edgefleet_common.grpc_errors import ANSWERED_KEY
from edgefleet_common.grpc_transport import server_options
from edgefleet_common.pki import PkiError, load_csr
from orchestrator.manifest import LOCAL_NODE, LoadedManifest, ManifestError, load_text
from tests.cluster_pki import test_ca

GiB = 1024**3
MiB = 1024**2

Step = controller_pb2.PlanStep
Event = controller_pb2.Event
NodeState = common_pb2.NodeState
ModelState = common_pb2.ModelState
AgentState = common_pb2.AgentState


def ago(seconds: float) -> Timestamp:
    """A timestamp `seconds` before now."""
    stamp = Timestamp()
    stamp.FromNanoseconds(int((time.time() - seconds) * 1e9))
    return stamp


def canned_nodes() -> list[controller_pb2.NodeView]:
    """edge-1 ready and serving, edge-2 ready and still loading, edge-3 not-ready."""
    return [
        controller_pb2.NodeView(
            id="edge-1",
            state=NodeState.NODE_STATE_READY,
            address="10.0.0.11:7441",
            version="0.1.0",
            last_heartbeat=ago(1),
            state_since=ago(600),
            generation=3,
            observed_generation=3,
            routes_generation=7,
            routes_reported=True,
            capacity=common_pb2.Capacity(
                cpu_count=4, memory_total_bytes=16 * GiB, memory_available_bytes=9 * GiB
            ),
            load=common_pb2.NodeLoad(
                in_flight=2, queue_depth=0, latency_ewma_ms=180.0, memory_used_bytes=int(2.4 * GiB)
            ),
            models=[
                common_pb2.ModelStatus(
                    alias="phi-4-mini",
                    state=ModelState.MODEL_STATE_READY,
                    memory_bytes=int(2.4 * GiB),
                    runtime="llama.cpp",
                    in_flight=2,
                    last_used=ago(3),
                )
            ],
            agents=[
                common_pb2.AgentStatus(
                    name="customer-service",
                    model="phi-4-mini",
                    state=AgentState.AGENT_STATE_READY,
                    in_flight=2,
                    latency_ewma_ms=180.0,
                    requests_total=120,
                    failures_total=1,
                ),
                common_pb2.AgentStatus(
                    name="scheduling", model="phi-4-mini", state=AgentState.AGENT_STATE_READY
                ),
            ],
            labels={"zone": "front-desk"},
            discovered_by="mdns",
        ),
        controller_pb2.NodeView(
            id="edge-2",
            state=NodeState.NODE_STATE_READY,
            address="10.0.0.12:7441",
            version="0.1.0",
            last_heartbeat=ago(2),
            generation=3,
            observed_generation=2,
            routes_generation=5,
            routes_reported=True,
            capacity=common_pb2.Capacity(cpu_count=2, memory_total_bytes=8 * GiB),
            load=common_pb2.NodeLoad(memory_used_bytes=0),
            models=[
                common_pb2.ModelStatus(
                    alias="qwen2.5-coder-0.5b",
                    state=ModelState.MODEL_STATE_LOADING,
                    progress=0.45,
                    runtime="llama.cpp",
                )
            ],
            agents=[
                common_pb2.AgentStatus(
                    name="technical-support",
                    model="qwen2.5-coder-0.5b",
                    state=AgentState.AGENT_STATE_STARTING,
                ),
                common_pb2.AgentStatus(
                    name="documentation",
                    model="qwen2.5-coder-0.5b",
                    state=AgentState.AGENT_STATE_PENDING,
                ),
            ],
            discovered_by="mdns",
        ),
        controller_pb2.NodeView(
            id="edge-3",
            state=NodeState.NODE_STATE_NOT_READY,
            reason="no heartbeat for 3s",
            address="10.0.0.13:7441",
            version="0.1.0",
            last_heartbeat=ago(300),
            discovered_by="static",
        ),
    ]


def _replica(node: str, state: int, **fields: Any) -> controller_pb2.ReplicaView:
    return controller_pb2.ReplicaView(node_id=node, state=state, preferred=True, **fields)


def canned_agents(*, rolled_out: bool = False) -> list[controller_pb2.AgentView]:
    """The four agents of `distributed-edge`; the two on edge-2 become ready when rolled out."""
    late = AgentState.AGENT_STATE_READY if rolled_out else AgentState.AGENT_STATE_STARTING
    ready_late = 1 if rolled_out else 0
    return [
        controller_pb2.AgentView(
            name="customer-service",
            deployment="distributed-edge",
            model="phi-4-mini",
            tools=["database", "calendar"],
            desired_replicas=1,
            ready_replicas=1,
            replicas=[
                _replica(
                    "edge-1",
                    AgentState.AGENT_STATE_READY,
                    in_flight=2,
                    latency_ewma_ms=180.0,
                    circuit="closed",
                )
            ],
        ),
        controller_pb2.AgentView(
            name="scheduling",
            deployment="distributed-edge",
            model="phi-4-mini",
            desired_replicas=1,
            ready_replicas=1,
            replicas=[_replica("edge-1", AgentState.AGENT_STATE_READY, circuit="closed")],
        ),
        controller_pb2.AgentView(
            name="technical-support",
            deployment="distributed-edge",
            model="qwen2.5-coder-0.5b",
            desired_replicas=1,
            ready_replicas=ready_late,
            replicas=[_replica("edge-2", late, circuit="closed")],
        ),
        controller_pb2.AgentView(
            name="documentation",
            deployment="distributed-edge",
            model="qwen2.5-coder-0.5b",
            desired_replicas=1,
            ready_replicas=ready_late,
            replicas=[_replica("edge-2", late, circuit="closed")],
        ),
    ]


def canned_models(*, rolled_out: bool = False, failed: str = "") -> list[controller_pb2.ModelView]:
    """phi-4-mini ready on edge-1; qwen2.5-coder-0.5b loading (or ready, or failed) on edge-2."""
    if failed:
        late = controller_pb2.ModelReplicaView(
            node_id="edge-2", state=ModelState.MODEL_STATE_FAILED, reason=failed
        )
    elif rolled_out:
        late = controller_pb2.ModelReplicaView(
            node_id="edge-2",
            state=ModelState.MODEL_STATE_READY,
            memory_bytes=600 * MiB,
            runtime="llama.cpp",
        )
    else:
        late = controller_pb2.ModelReplicaView(
            node_id="edge-2", state=ModelState.MODEL_STATE_LOADING, progress=0.45
        )
    return [
        controller_pb2.ModelView(
            alias="phi-4-mini",
            deployments=["distributed-edge"],
            tasks=["conversation"],
            ready_replicas=1,
            replicas=[
                controller_pb2.ModelReplicaView(
                    node_id="edge-1",
                    state=ModelState.MODEL_STATE_READY,
                    memory_bytes=int(2.4 * GiB),
                    runtime="llama.cpp",
                    in_flight=2,
                    latency_ewma_ms=180.0,
                    circuit="closed",
                )
            ],
        ),
        controller_pb2.ModelView(
            alias="qwen2.5-coder-0.5b",
            deployments=["distributed-edge"],
            ready_replicas=1 if rolled_out and not failed else 0,
            replicas=[late],
        ),
    ]


def canned_events() -> list[controller_pb2.Event]:
    """What happened while the fleet came up."""
    info, warning = Event.Severity.SEVERITY_INFO, Event.Severity.SEVERITY_WARNING
    rows = [
        (900, info, "NodeReady", "node/edge-1", "edge-1", "edge-1 joined (mdns) at 10.0.0.11:7441"),
        (890, info, "NodeReady", "node/edge-2", "edge-2", "edge-2 joined (mdns) at 10.0.0.12:7441"),
        (880, info, "ModelReady", "model/phi-4-mini", "edge-1", "phi-4-mini loaded in 4.2s"),
        (870, info, "AgentReady", "agent/customer-service", "edge-1", "customer-service ready"),
        (300, warning, "NodeNotReady", "node/edge-3", "edge-3", "no heartbeat for 3s"),
        (20, info, "ModelLoading", "model/qwen2.5-coder-0.5b", "edge-2", "loading (45%)"),
    ]
    return [
        Event(
            id=index,
            time=ago(seconds),
            severity=level,
            reason=reason,
            object=obj,
            node_id=node,
            message=message,
        )
        for index, (seconds, level, reason, obj, node, message) in enumerate(rows, start=1)
    ]


def drain_step(
    *items: tuple[str, str, str, str, str],
    drained: bool = False,
    mark: str = "draining",
    waiting: str = "",
) -> controller_pb2.DrainProgress:
    """Drain progress of edge-1: items as (kind, name, state, "node:state,…", blocked)."""
    return controller_pb2.DrainProgress(
        node_id="edge-1",
        state=NodeState.NODE_STATE_DRAINING,
        mark=mark,
        drained=drained,
        waiting=waiting,
        items=[
            controller_pb2.DrainItem(
                kind=kind,
                name=name,
                state=state,
                blocked=blocked,
                targets=[
                    controller_pb2.DrainTarget(node_id=t.split(":")[0], state=t.split(":")[1])
                    for t in targets.split(",")
                    if t
                ],
            )
            for kind, name, state, targets, blocked in items
        ],
    )


def canned_status(**state: Any) -> controller_pb2.ClusterStatus:
    """GetStatus of the canned fleet (`rolled_out=True`: everything ready)."""
    agents = canned_agents(rolled_out=bool(state.get("rolled_out")))
    return controller_pb2.ClusterStatus(
        controller_id="ctl-test",
        version="0.1.0",
        gateway_url="http://127.0.0.1:8080/v1",
        routes_generation=7,
        deployments=[
            controller_pb2.DeploymentView(
                name="distributed-edge",
                type="distributed-edge",
                revision=controller_pb2.Revision(
                    deployment="distributed-edge", number=1, applied_at=ago(900)
                ),
                agents_desired=4,
                agents_ready=sum(a.ready_replicas for a in agents),
                unplaced=[
                    controller_pb2.Unplaced(
                        kind="agent",
                        name="billing",
                        missing=1,
                        reason="no ready node has 3.0GiB free",
                        deployment="distributed-edge",
                    )
                ],
            )
        ],
        nodes=canned_nodes(),
        agents=agents,
        models=canned_models(**state),
        events=canned_events()[-3:],
        control_plane=controller_pb2.ControlPlane(
            role="single", leader_id="ctl-test", store_kind="sqlite", writable=True
        ),
    )


def canned_endpoints() -> controller_pb2.ListEndpointsResponse:
    """The controller's gateway and the canned nodes': edge-1 on the current routing table
    (7), edge-2 behind (5), edge-3 never said which (its URL from its mDNS advert)."""
    endpoint = controller_pb2.Endpoint
    return controller_pb2.ListEndpointsResponse(
        routes_generation=7,
        endpoints=[
            endpoint(
                name="controller",
                kind="controller",
                url="http://127.0.0.1:8080/v1",
                url_source="controller",
                state="ready",
                routes_generation=7,
                routes_reported=True,
            ),
            endpoint(
                name="edge-1",
                kind="node",
                url="https://10.0.0.11:7480/v1",
                url_source="node-info",
                state="ready",
                routes_generation=7,
                routes_reported=True,
                address="10.0.0.11:7441",
            ),
            endpoint(
                name="edge-2",
                kind="node",
                url="https://10.0.0.12:7480/v1",
                url_source="node-info",
                state="ready",
                routes_generation=5,
                routes_reported=True,
                address="10.0.0.12:7441",
            ),
            endpoint(
                name="edge-3",
                kind="node",
                url="https://10.0.0.13:7480/v1",
                url_source="mdns",
                state="not-ready",
                address="10.0.0.13:7441",
            ),
        ],
    )


def naive_plan(loaded: LoadedManifest, known_nodes: set[str]) -> controller_pb2.Plan:
    """Each node loads its models and starts its agents; unknown nodes leave work unplaced."""
    desired = loaded.desired
    name = desired.name
    plan = controller_pb2.Plan()
    placements = [(n.id, n.models, n.agents) for n in desired.nodes] or [
        (LOCAL_NODE, tuple(m.alias for m in desired.models), tuple(a.name for a in desired.agents))
    ]
    for node, models, agents in placements:
        if node not in known_nodes and node != LOCAL_NODE:
            plan.unplaced.extend(
                controller_pb2.Unplaced(
                    kind="agent",
                    name=agent,
                    missing=1,
                    deployment=name,
                    reason=f"node {node} has not joined",
                )
                for agent in agents
            )
            continue
        why = "pinned by the manifest" if desired.nodes else "single-device"
        plan.steps.extend(
            Step(action=Step.ACTION_LOAD_MODEL, node_id=node, name=m, reason=why, deployment=name)
            for m in models
        )
        plan.steps.extend(
            Step(action=Step.ACTION_START_AGENT, node_id=node, name=a, reason=why, deployment=name)
            for a in agents
        )
    return plan


def _undo(plan: controller_pb2.Plan) -> controller_pb2.Plan:
    """The steps that take a plan's work away again, agents first."""
    opposite = {
        Step.ACTION_START_AGENT: Step.ACTION_STOP_AGENT,
        Step.ACTION_LOAD_MODEL: Step.ACTION_UNLOAD_MODEL,
    }
    steps = sorted(plan.steps, key=lambda s: s.action != Step.ACTION_START_AGENT)
    return controller_pb2.Plan(
        steps=[
            Step(
                action=opposite[s.action],
                node_id=s.node_id,
                name=s.name,
                reason="deployment deleted",
                deployment=s.deployment,
            )
            for s in steps
            if s.action in opposite
        ]
    )


class FakeControllerApi(controller_pb2_grpc.ControllerServiceServicer):
    """The controller API test double; see the module docstring."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, Message]] = []
        self.revisions: dict[str, list[controller_pb2.Revision]] = {}
        """Stored revisions per deployment, oldest first, with their manifest text."""
        self.status_script: list[controller_pb2.ClusterStatus] = []
        """GetStatus answers in turn; the last repeats. Empty: the canned status."""
        self.events = canned_events()
        self.live_events: queue.Queue[controller_pb2.Event | None] = queue.Queue()
        """Events a following WatchEvents sends after the stored ones; None ends the stream."""
        self.chat_chunks: list[node_pb2.InvokeAgentChunk] = default_chat()
        self.refuse: dict[str, tuple[grpc.StatusCode, str]] = {}
        self.lose: dict[str, str] = {}
        """Methods whose calls end UNAVAILABLE as from a server going away (no answer of
        the controller's own), with this message."""
        """Methods that fail with this status and message instead of answering."""
        self.marks: dict[str, str] = {}
        """Node id -> `cordoned` or `draining`, as the maintenance calls left them."""
        self.drain_script: list[controller_pb2.DrainProgress] = []
        """GetDrainProgress answers in turn; the last repeats. Empty: drained at once."""
        self.admins: list[controller_pb2.AdminCertificate] = []
        """Admin certificates CreateAdmin issued (from the test run's CA), oldest first."""
        self.controller_addresses: list[str] = []
        """What CreateAdmin names as the cluster's controllers."""
        self.address = ""
        self._stopping = threading.Event()

    # -- test helpers -----------------------------------------------------------------

    def requests(self, method: str) -> list[Any]:
        """Requests received by one method, in order."""
        with self.lock:
            return [request for name, request in self.calls if name == method]

    @classmethod
    @contextlib.contextmanager
    def serving(cls) -> Iterator[FakeControllerApi]:
        """A started test double; `address` is its HOST:PORT."""
        api = cls()
        server = grpc.server(ThreadPoolExecutor(max_workers=8), options=server_options())
        controller_pb2_grpc.add_ControllerServiceServicer_to_server(api, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        api.address = f"127.0.0.1:{port}"
        try:
            yield api
        finally:
            api._stopping.set()
            server.stop(grace=None)

    def _record(self, method: str, request: Message, context: Any) -> None:
        with self.lock:
            self.calls.append((method, request))
            refusal = self.refuse.get(method)
            lost = self.lose.get(method)
        if lost is not None:
            context.abort(grpc.StatusCode.UNAVAILABLE, lost)
        if refusal is not None:
            # As the controller's error mapping does for every status it chooses.
            context.set_trailing_metadata(((ANSWERED_KEY, "1"),))
            context.abort(*refusal)

    def _load(self, request: Any, context: Any) -> LoadedManifest:
        try:
            return load_text(request.manifest, source=request.source or "<manifest>")
        except ManifestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # abort raises; this keeps type checkers and readers sure of it

    def _known_nodes(self) -> set[str]:
        return {n.id for n in canned_nodes() if n.state == NodeState.NODE_STATE_READY}

    def _revision(
        self, name: str, text: str, source: str, number: int, cause: str
    ) -> controller_pb2.Revision:
        digest = hashlib.sha256(text.encode()).hexdigest()
        return controller_pb2.Revision(
            deployment=name,
            number=number,
            applied_at=ago(0),
            source=source,
            manifest=text,
            digest=digest,
            cause=cause,
        )

    # -- ControllerService ----------------------------------------------------------------

    def Apply(self, request: Any, context: Any) -> controller_pb2.ApplyResponse:
        self._record("Apply", request, context)
        loaded = self._load(request, context)
        name = loaded.desired.name
        with self.lock:
            stored = self.revisions.setdefault(name, [])
            current = stored[-1] if stored else None
            if current is not None and current.manifest == request.manifest:
                revision = controller_pb2.Revision()
                revision.CopyFrom(current)
                revision.ClearField("manifest")
                return controller_pb2.ApplyResponse(
                    revision=revision, plan=controller_pb2.Plan(), changed=False
                )
            revision = self._revision(
                name, request.manifest, request.source, len(stored) + 1, "apply"
            )
            if not request.dry_run:
                stored.append(revision)
            else:
                if not stored:
                    del self.revisions[name]
        answer = controller_pb2.Revision()
        answer.CopyFrom(revision)
        answer.ClearField("manifest")
        return controller_pb2.ApplyResponse(
            revision=answer, plan=naive_plan(loaded, self._known_nodes()), changed=True
        )

    def Diff(self, request: Any, context: Any) -> controller_pb2.DiffResponse:
        self._record("Diff", request, context)
        loaded = self._load(request, context)
        with self.lock:
            stored = self.revisions.get(loaded.desired.name, [])
            current = stored[-1] if stored else None
        if current is not None and current.manifest == request.manifest:
            return controller_pb2.DiffResponse(changed=False, current_revision=current.number)
        diff = ""
        if current is not None:
            diff = "".join(
                difflib.unified_diff(
                    current.manifest.splitlines(keepends=True),
                    request.manifest.splitlines(keepends=True),
                    fromfile=f"revision {current.number}",
                    tofile=request.source,
                )
            )
        return controller_pb2.DiffResponse(
            plan=naive_plan(loaded, self._known_nodes()),
            changed=True,
            manifest_diff=diff,
            current_revision=current.number if current else 0,
        )

    def Delete(self, request: Any, context: Any) -> controller_pb2.DeleteResponse:
        self._record("Delete", request, context)
        with self.lock:
            stored = self.revisions.get(request.deployment)
            if not stored:
                known = ", ".join(sorted(self.revisions)) or "none"
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"no deployment named {request.deployment}; known: {known}",
                )
            text, source = stored[-1].manifest, stored[-1].source
            if not request.dry_run:
                del self.revisions[request.deployment]
        plan = _undo(naive_plan(load_text(text, source=source), self._known_nodes()))
        return controller_pb2.DeleteResponse(plan=plan, deleted=not request.dry_run)

    def Rollback(self, request: Any, context: Any) -> controller_pb2.ApplyResponse:
        self._record("Rollback", request, context)
        with self.lock:
            name = request.deployment
            if not name:
                if len(self.revisions) != 1:
                    context.abort(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"name the deployment: there are {len(self.revisions)}",
                    )
                (name,) = self.revisions
            stored = self.revisions.get(name)
            if not stored:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no deployment named {name}")
            target = request.to_revision or stored[-1].number - 1
            if target < 1:
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"deployment {name} has no revision before {stored[-1].number}",
                )
            old = next((r for r in stored if r.number == target), None)
            if old is None:
                context.abort(
                    grpc.StatusCode.NOT_FOUND, f"deployment {name} has no revision {target}"
                )
            revision = self._revision(
                name, old.manifest, old.source, len(stored) + 1, f"rollback to {target}"
            )
            if not request.dry_run:
                stored.append(revision)
        plan = naive_plan(load_text(old.manifest, source=old.source), self._known_nodes())
        answer = controller_pb2.Revision()
        answer.CopyFrom(revision)
        answer.ClearField("manifest")
        return controller_pb2.ApplyResponse(revision=answer, plan=plan, changed=True)

    def ListRevisions(self, request: Any, context: Any) -> controller_pb2.ListRevisionsResponse:
        self._record("ListRevisions", request, context)
        with self.lock:
            stored = self.revisions.get(request.deployment)
            if stored is None:
                context.abort(
                    grpc.StatusCode.NOT_FOUND, f"no deployment named {request.deployment}"
                )
            revisions = []
            for revision in reversed(stored):
                copy = controller_pb2.Revision()
                copy.CopyFrom(revision)
                if not request.with_manifest:
                    copy.ClearField("manifest")
                revisions.append(copy)
        return controller_pb2.ListRevisionsResponse(revisions=revisions)

    def GetStatus(self, request: Any, context: Any) -> controller_pb2.ClusterStatus:
        self._record("GetStatus", request, context)
        if not self.status_script:
            status = canned_status()
            del status.nodes[:]
            status.nodes.extend(self._nodes())
            return status
        with self.lock:
            return (
                self.status_script.pop(0) if len(self.status_script) > 1 else self.status_script[0]
            )

    def ListNodes(self, request: Any, context: Any) -> controller_pb2.ListNodesResponse:
        self._record("ListNodes", request, context)
        return controller_pb2.ListNodesResponse(nodes=self._nodes())

    def ListEndpoints(self, request: Any, context: Any) -> controller_pb2.ListEndpointsResponse:
        self._record("ListEndpoints", request, context)
        return canned_endpoints()

    def _nodes(self) -> list[controller_pb2.NodeView]:
        """The canned nodes with their marks (a ready draining node is `draining`)."""
        nodes = canned_nodes()
        with self.lock:
            for node in nodes:
                node.mark = self.marks.get(node.id, "")
                if node.mark == "draining" and node.state == NodeState.NODE_STATE_READY:
                    node.state = NodeState.NODE_STATE_DRAINING
                if node.mark:
                    node.marked_at.CopyFrom(ago(60))
        return nodes

    def _maintain(
        self, method: str, request: Any, context: Any, mark: str
    ) -> controller_pb2.NodeMaintenanceResponse:
        """Cordon (`cordoned`), drain (`draining`) or uncordon (``) a canned node."""
        self._record(method, request, context)
        known = [n.id for n in canned_nodes()]
        if request.node_id not in known:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no node named `{request.node_id}`; nodes: {', '.join(known)}",
            )
        with self.lock:
            before = self.marks.get(request.node_id, "")
            # Draining includes cordoned: cordoning a draining node changes nothing.
            changed = before != mark and not (mark == "cordoned" and before == "draining")
            if changed and mark:
                self.marks[request.node_id] = mark
            elif changed:
                del self.marks[request.node_id]
        node = next(n for n in self._nodes() if n.id == request.node_id)
        return controller_pb2.NodeMaintenanceResponse(changed=changed, node=node)

    def CordonNode(self, request: Any, context: Any) -> controller_pb2.NodeMaintenanceResponse:
        return self._maintain("CordonNode", request, context, "cordoned")

    def DrainNode(self, request: Any, context: Any) -> controller_pb2.NodeMaintenanceResponse:
        return self._maintain("DrainNode", request, context, "draining")

    def UncordonNode(self, request: Any, context: Any) -> controller_pb2.NodeMaintenanceResponse:
        return self._maintain("UncordonNode", request, context, "")

    def GetDrainProgress(self, request: Any, context: Any) -> controller_pb2.DrainProgress:
        self._record("GetDrainProgress", request, context)
        if request.node_id not in {n.id for n in canned_nodes()}:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no node named `{request.node_id}`")
        with self.lock:
            if not self.drain_script:
                mark = self.marks.get(request.node_id, "")
                return controller_pb2.DrainProgress(
                    node_id=request.node_id, mark=mark, drained=mark == "draining"
                )
            if len(self.drain_script) > 1:
                return self.drain_script.pop(0)
            return self.drain_script[0]

    def ListAgents(self, request: Any, context: Any) -> controller_pb2.ListAgentsResponse:
        self._record("ListAgents", request, context)
        return controller_pb2.ListAgentsResponse(agents=canned_agents())

    def ListModels(self, request: Any, context: Any) -> controller_pb2.ListModelsResponse:
        self._record("ListModels", request, context)
        return controller_pb2.ListModelsResponse(models=canned_models())

    def WatchEvents(self, request: Any, context: Any) -> Iterator[controller_pb2.Event]:
        self._record("WatchEvents", request, context)
        stored = [
            e
            for e in self.events
            if e.id > request.after_id and (not request.object or e.object == request.object)
        ]
        if request.limit:
            stored = stored[-request.limit :]
        yield from stored
        while request.follow and context.is_active() and not self._stopping.is_set():
            try:
                event = self.live_events.get(timeout=0.05)
            except queue.Empty:
                continue
            if event is None:
                return
            if not request.object or event.object == request.object:
                yield event

    def CreateAdmin(self, request: Any, context: Any) -> controller_pb2.CreateAdminResponse:
        self._record("CreateAdmin", request, context)
        ca = test_ca()
        try:
            issued = ca.issue_admin(load_csr(request.csr_pem.encode()), request.name)
        except PkiError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise
        view = controller_pb2.AdminCertificate(
            name=request.name, serial=format(issued.serial, "x"), issued_at=ago(0)
        )
        view.expires_at.FromDatetime(issued.not_after)
        with self.lock:
            self.admins.append(view)
        return controller_pb2.CreateAdminResponse(
            certificate_pem=issued.pem.decode(),
            ca_pem=ca.cert_pem.decode(),
            cluster="default",
            controllers=self.controller_addresses,
            admin=view,
        )

    def RevokeAdmin(self, request: Any, context: Any) -> controller_pb2.RevokeAdminResponse:
        self._record("RevokeAdmin", request, context)
        with self.lock:
            found = [a for a in self.admins if a.name == request.name]
            if not found:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no admin named {request.name}")
            live = [a for a in found if not a.HasField("revoked_at")]
            for admin in live:
                admin.revoked_at.CopyFrom(ago(0))
        return controller_pb2.RevokeAdminResponse(revoked=len(live))

    def ListAdmins(self, request: Any, context: Any) -> controller_pb2.ListAdminsResponse:
        self._record("ListAdmins", request, context)
        with self.lock:
            return controller_pb2.ListAdminsResponse(admins=self.admins)

    def Chat(self, request: Any, context: Any) -> Iterator[node_pb2.InvokeAgentChunk]:
        self._record("Chat", request, context)
        known = {a.name for a in canned_agents()} | {m.alias for m in canned_models()}
        if request.agent not in known:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no agent or model named {request.agent}; known: {', '.join(sorted(known))}",
            )
        yield from self.chat_chunks


def default_chat() -> list[node_pb2.InvokeAgentChunk]:
    """A reply that calls the `time` tool, then answers in three deltas."""
    Phase = node_pb2.ToolEvent.Phase
    return [
        node_pb2.InvokeAgentChunk(node_id="edge-1"),
        node_pb2.InvokeAgentChunk(
            tool=node_pb2.ToolEvent(
                phase=Phase.PHASE_STARTED, tool="time", call_id="c1", arguments_json="{}"
            )
        ),
        node_pb2.InvokeAgentChunk(
            tool=node_pb2.ToolEvent(
                phase=Phase.PHASE_FINISHED, tool="time", call_id="c1", result="14:02 UTC"
            )
        ),
        node_pb2.InvokeAgentChunk(delta="It is "),
        node_pb2.InvokeAgentChunk(delta="14:02 "),
        node_pb2.InvokeAgentChunk(delta="UTC."),
        node_pb2.InvokeAgentChunk(
            finish_reason="stop", usage=common_pb2.Usage(prompt_tokens=31, completion_tokens=7)
        ),
    ]
