"""The controller's answers to "what is running where": node, agent, model and deployment views.

A replica's state joins what the controller assigned with what the node
reports: assigned and reported → the node's word; assigned, not (yet)
reported → pending; reported but no longer assigned → superseded (fenced off
by a newer generation, stopping once the node hears of it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from edgefleet.v1 import common_pb2, controller_pb2
from edgefleet_contract.desired import NodeDesired
from edgefleet_contract.wire import timestamp
from edgefleet_dataplane.balancer import ReplicaStats
from orchestrator.fleet.fleet import Fleet
from orchestrator.fleet.health import node_state
from orchestrator.fleet.node_link import NodeLink
from orchestrator.fleet.replica_directory import candidates
from orchestrator.manifest.desired import DesiredState
from orchestrator.scheduler.model import Plan, Unplaced, size_text
from orchestrator.store import NodeMarkRow, Revision

NODE_STATES: Mapping[str, common_pb2.NodeState] = {
    "ready": common_pb2.NODE_STATE_READY,
    "suspect": common_pb2.NODE_STATE_SUSPECT,
    "not-ready": common_pb2.NODE_STATE_NOT_READY,
    "untrusted": common_pb2.NODE_STATE_UNTRUSTED,
    "draining": common_pb2.NODE_STATE_DRAINING,
}


ReplicaStatsLookup = Callable[[str, str], ReplicaStats | None]
"""(target name, node id) → the router's figures for that replica, if it has any."""


def _copy_replica_stats(
    replica: controller_pb2.ReplicaView | controller_pb2.ModelReplicaView,
    stats: ReplicaStats | None,
) -> bool:
    """Put the router's figures on a replica view; False when it has none."""
    if stats is None:
        return False
    replica.in_flight = stats.in_flight
    replica.latency_ewma_ms = stats.latency_ewma_ms
    replica.circuit = stats.circuit
    return True


def _reason(link: NodeLink) -> str:
    if link.health == "ready":
        return ""
    return link.distrust if link.health == "untrusted" else link.reason


def node_view(
    link: NodeLink, assigned: NodeDesired | None, mark: NodeMarkRow | None = None
) -> controller_pb2.NodeView:
    """One node: health (or draining), its mark, address, generations, and what it reports
    running."""
    view = controller_pb2.NodeView(
        id=link.node_id,
        state=NODE_STATES[node_state(link.health, mark.mark if mark else None)],
        reason=_reason(link),
        address=link.address,
        state_since=timestamp(link.health_since),
        generation=assigned.generation if assigned else 0,
        observed_generation=link.observed_generation,
        labels=link.labels,
        discovered_by=link.discovered_by,
    )
    if link.info is not None:
        view.version = link.info.version
    if link.last_heard_wall is not None:
        view.last_heartbeat.CopyFrom(timestamp(link.last_heard_wall))
    if link.push_error and link.health == "ready":
        view.reason = f"cannot apply its desired state: {link.push_error}"
    if mark is not None:
        _copy_mark(view, mark)
    status = link.status
    if status is not None:
        view.capacity.CopyFrom(status.capacity)
        view.load.CopyFrom(status.load)
        view.models.extend(status.models)
        for model in view.models:
            if model.HasField("download"):
                model.reason = download_text(model.download)
        view.agents.extend(status.agents)
        view.routes_generation = status.routes_generation
        view.routes_reported = True
    return view


def node_views(
    fleet: Fleet, assignment: Mapping[str, NodeDesired]
) -> list[controller_pb2.NodeView]:
    """Every node the fleet knows, and every marked node it has no link to, by id."""
    marks = fleet.marks.all()
    views = [
        node_view(link, assignment.get(link.node_id), marks.get(link.node_id))
        for link in fleet.links()
    ]
    # A cordon outlives the link: a marked node that is not connected is listed too.
    views += [unconnected_node_view(m) for n, m in marks.items() if fleet.get(n) is None]
    return sorted(views, key=lambda view: view.id)


def unconnected_node_view(mark: NodeMarkRow) -> controller_pb2.NodeView:
    """A marked node the controller has no link to (named by a manifest, or not found
    since the controller started)."""
    view = controller_pb2.NodeView(
        id=mark.node_id, state=common_pb2.NODE_STATE_NOT_READY, reason="not connected"
    )
    _copy_mark(view, mark)
    return view


def _copy_mark(view: controller_pb2.NodeView, mark: NodeMarkRow) -> None:
    view.mark = mark.mark
    view.mark_reason = mark.reason
    view.marked_at.CopyFrom(timestamp(mark.since))
    view.drained = mark.mark == "draining" and mark.drained_at is not None


def _agent_replicas(
    name: str,
    fleet: Fleet,
    assignment: Mapping[str, NodeDesired],
    preferred: Sequence[str],
    replica_stats: ReplicaStatsLookup,
) -> list[controller_pb2.ReplicaView]:
    assigned = {node for node, d in assignment.items() if any(a.name == name for a in d.agents)}
    reported: dict[str, common_pb2.AgentStatus] = {}
    for link in fleet.links():
        if link.status is not None:
            for agent in link.status.agents:
                if agent.name == name:
                    reported[link.node_id] = agent
    replicas = []
    for node in sorted(assigned | set(reported)):
        found = fleet.get(node)
        status = reported.get(node)
        replica = controller_pb2.ReplicaView(node_id=node, preferred=node in preferred)
        if node not in assigned:
            replica.state = common_pb2.AGENT_STATE_SUPERSEDED
            replica.reason = "moved by a newer generation; stops when the node hears of it"
        elif found is None or found.health != "ready":
            replica.state = status.state if status else common_pb2.AGENT_STATE_PENDING
            replica.reason = (
                f"node {node} is {found.health}" if found else f"node {node} not connected"
            )
        elif status is None:
            replica.state = common_pb2.AGENT_STATE_PENDING
            replica.reason = f"waiting for {node} to start it"
        else:
            replica.state, replica.reason = status.state, status.reason
            replica.queue_depth = status.queue_depth
        if not _copy_replica_stats(replica, replica_stats(name, node)) and status is not None:
            replica.latency_ewma_ms = status.latency_ewma_ms
            replica.circuit = "closed"
        replicas.append(replica)
    return replicas


def agent_views(
    deployments: Sequence[DesiredState],
    fleet: Fleet,
    assignment: Mapping[str, NodeDesired],
    plan: Plan | None,
    replica_stats: ReplicaStatsLookup,
) -> list[controller_pb2.AgentView]:
    """Every agent of the current deployments with its replicas."""
    unplaced = {u.name: u.reason for u in plan.unplaced if u.kind == "agent"} if plan else {}
    views = []
    for deployment in deployments:
        for agent in deployment.agents:
            replicas = _agent_replicas(
                agent.name, fleet, assignment, agent.preferred_nodes, replica_stats
            )
            ready = len(candidates(fleet, assignment, agent.name, "agent"))
            views.append(
                controller_pb2.AgentView(
                    name=agent.name,
                    deployment=deployment.name,
                    model=agent.model,
                    tools=list(agent.tools),
                    desired_replicas=agent.replicas,
                    ready_replicas=ready,
                    replicas=replicas,
                    unplaced_reason=unplaced.get(agent.name, ""),
                )
            )
    return sorted(views, key=lambda v: v.name)


def model_views(
    deployments: Sequence[DesiredState],
    fleet: Fleet,
    assignment: Mapping[str, NodeDesired],
    replica_stats: ReplicaStatsLookup,
) -> list[controller_pb2.ModelView]:
    """Every model of the current deployments with where it is loaded."""
    owners: dict[str, list[str]] = {}
    tasks: dict[str, list[str]] = {}
    for deployment in deployments:
        for model in deployment.models:
            owners.setdefault(model.alias, []).append(deployment.name)
            tasks.setdefault(model.alias, list(model.tasks))
    views = []
    for alias in sorted(owners):
        assigned = {n for n, d in assignment.items() if any(m.alias == alias for m in d.models)}
        replicas = []
        for node in sorted(assigned):
            link = fleet.get(node)
            replica = controller_pb2.ModelReplicaView(node_id=node)
            found = None
            if link is not None and link.status is not None:
                found = next((m for m in link.status.models if m.alias == alias), None)
            if found is None:
                replica.state = common_pb2.MODEL_STATE_PENDING
                replica.reason = f"waiting for {node}" if link else f"node {node} not connected"
            else:
                replica.state, replica.reason = found.state, found.reason
                replica.progress = found.progress
                if found.HasField("download"):
                    replica.reason = download_text(found.download)
                    replica.progress = _fraction(found.download)
                replica.memory_bytes = found.memory_bytes
                replica.runtime = found.runtime
            _copy_replica_stats(replica, replica_stats(alias, node))
            replicas.append(replica)
        ready = len(candidates(fleet, assignment, alias, "model"))
        views.append(
            controller_pb2.ModelView(
                alias=alias,
                deployments=owners[alias],
                tasks=tasks[alias],
                replicas=replicas,
                ready_replicas=ready,
            )
        )
    return views


BAR_CELLS = 10


def download_text(progress: common_pb2.DownloadProgress) -> str:
    """`downloading ████▌░░░░░ 45% 61.0 MiB/135.2 MiB from peer n2, 3.1 MiB/s, 40 s left`."""
    done, total = progress.bytes_done, progress.bytes_total
    if total:
        fraction = _fraction(progress)
        filled = round(fraction * BAR_CELLS)
        bar = "█" * filled + "░" * (BAR_CELLS - filled)
        text = f"downloading {bar} {fraction:.0%} {size_text(done)}/{size_text(total)}"
    else:
        text = f"downloading {size_text(done)}"
    if progress.source:
        text += f" from {progress.source}"
    if progress.rate_bps > 0:
        text += f", {size_text(int(progress.rate_bps))}/s"
    if progress.eta_s > 0:
        text += f", {_duration(progress.eta_s)} left"
    return text


def _fraction(progress: common_pb2.DownloadProgress) -> float:
    if not progress.bytes_total:
        return 0.0
    return min(progress.bytes_done / progress.bytes_total, 1.0)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def revision_view(revision: Revision, *, with_manifest: bool = False) -> controller_pb2.Revision:
    """A stored revision as the API returns it."""
    return controller_pb2.Revision(
        deployment=revision.deployment,
        number=revision.number,
        applied_at=timestamp(revision.applied_at),
        source=revision.source,
        manifest=revision.manifest if with_manifest else "",
        digest=revision.digest,
        cause=revision.cause,
    )


def plan_view(plan: Plan) -> controller_pb2.Plan:
    """A plan as the API returns it."""
    return controller_pb2.Plan(
        steps=[
            controller_pb2.PlanStep(
                action=_ACTIONS[s.action],
                node_id=s.node,
                name=s.name,
                reason=f"{s.reason}; {s.fetch}"
                if s.fetch and s.reason
                else str(s.fetch or s.reason),
                deployment=s.deployment,
            )
            for s in plan.steps
        ],
        unplaced=[_unplaced_view(u) for u in plan.unplaced],
    )


def _unplaced_view(unplaced: Unplaced) -> controller_pb2.Unplaced:
    return controller_pb2.Unplaced(
        kind=unplaced.kind,
        name=unplaced.name,
        missing=unplaced.missing,
        reason=unplaced.reason,
        deployment=unplaced.deployment,
    )


_ACTIONS: Mapping[str, controller_pb2.PlanStep.Action] = {
    "load-model": controller_pb2.PlanStep.ACTION_LOAD_MODEL,
    "unload-model": controller_pb2.PlanStep.ACTION_UNLOAD_MODEL,
    "evict-model": controller_pb2.PlanStep.ACTION_EVICT_MODEL,
    "start-agent": controller_pb2.PlanStep.ACTION_START_AGENT,
    "stop-agent": controller_pb2.PlanStep.ACTION_STOP_AGENT,
    "update-agent": controller_pb2.PlanStep.ACTION_UPDATE_AGENT,
}


def deployment_views(
    deployments: Sequence[DesiredState],
    revisions: Mapping[str, Revision],
    agents: Sequence[controller_pb2.AgentView],
    plan: Plan | None,
) -> list[controller_pb2.DeploymentView]:
    """Each current deployment with its revision and readiness."""
    views = []
    for deployment in deployments:
        mine = [a for a in agents if a.deployment == deployment.name]
        view = controller_pb2.DeploymentView(
            name=deployment.name,
            type=deployment.type,
            agents_desired=sum(a.desired_replicas for a in mine),
            agents_ready=sum(min(a.ready_replicas, a.desired_replicas) for a in mine),
        )
        revision = revisions.get(deployment.name)
        if revision is not None:
            view.revision.CopyFrom(revision_view(revision))
        if plan is not None:
            view.unplaced.extend(
                _unplaced_view(u) for u in plan.unplaced if u.deployment == deployment.name
            )
        views.append(view)
    return views
