"""The tables of `get`, `status`, `events` and `rollback --list`, one builder per object kind."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from edgefleet.v1 import controller_pb2
from orchestrator.cli.output import (
    age,
    agent_state,
    joined,
    millis,
    model_state,
    new_table,
    node_state_text,
    severity,
    size,
    styled,
)


def _ready_of(states: Sequence[str]) -> str:
    return f"{sum(1 for s in states if s == 'ready')}/{len(states)}"


def node_memory(node: controller_pb2.NodeView) -> str:
    """Memory the node's models use, of its total: `1.9GiB/16.0GiB`."""
    used, total = node.load.memory_used_bytes, node.capacity.memory_total_bytes
    if not total:
        return size(used)
    return f"{size(used) if used else '0B'}/{size(total)}"


def nodes_table(
    nodes: Sequence[controller_pb2.NodeView], *, wide: bool = False, now: float | None = None
) -> Table:
    """NAME, STATE (with a cordoned or draining mark), ADDRESS, AGENTS and MODELS
    (ready/total), MEMORY, HEARTBEAT, VERSION."""
    headers = ["NAME", "STATE", "ADDRESS", "AGENTS", "MODELS", "MEMORY", "HEARTBEAT", "VERSION"]
    if wide:
        headers += ["LABELS", "GENERATION", "DISCOVERED"]
    table = new_table(*headers)
    for node in nodes:
        row: list[str | Text] = [
            node.id,
            node_state_text(node),
            node.address or "-",
            _ready_of([agent_state(a.state) for a in node.agents]),
            _ready_of([model_state(m.state) for m in node.models]),
            node_memory(node),
            age(node.last_heartbeat, now),
            node.version or "-",
        ]
        if wide:
            labels = [f"{key}={value}" for key, value in sorted(node.labels.items())]
            row += [
                ",".join(labels) or "-",
                f"{node.observed_generation}/{node.generation}",
                node.discovered_by or "-",
            ]
        table.add_row(*row)
    return table


def replica_nodes(replicas: Sequence[controller_pb2.ReplicaView]) -> str:
    """`edge-1, edge-2 (starting)`: the nodes, with the state of those not ready."""
    parts = []
    for replica in replicas:
        state = agent_state(replica.state)
        parts.append(replica.node_id if state == "ready" else f"{replica.node_id} ({state})")
    return joined(parts)


def agents_table(agents: Sequence[controller_pb2.AgentView], *, wide: bool = False) -> Table:
    """NAME, DEPLOYMENT, MODEL, READY, NODES; wide adds the router's view of each replica."""
    headers = ["NAME", "DEPLOYMENT", "MODEL", "READY", "NODES"]
    if wide:
        headers += ["IN-FLIGHT", "EWMA", "CIRCUIT", "TOOLS"]
    table = new_table(*headers)
    for agent in agents:
        ready = f"{agent.ready_replicas}/{agent.desired_replicas}"
        short = agent.ready_replicas < agent.desired_replicas
        row: list[str | Text] = [
            agent.name,
            agent.deployment or "-",
            agent.model or "-",
            Text(ready, style="yellow" if short else "green"),
            replica_nodes(agent.replicas)
            if agent.replicas
            else (f"(unplaced: {agent.unplaced_reason})" if agent.unplaced_reason else "-"),
        ]
        if wide:
            row += [
                joined([f"{r.node_id}:{r.in_flight}" for r in agent.replicas]),
                joined([f"{r.node_id}:{millis(r.latency_ewma_ms)}" for r in agent.replicas]),
                joined([f"{r.node_id}:{r.circuit or '-'}" for r in agent.replicas]),
                ",".join(agent.tools) or "-",
            ]
        table.add_row(*row)
    return table


def model_replica_state(replica: controller_pb2.ModelReplicaView) -> str:
    """`ready`, `loading 45%`, `failed: out of memory`."""
    state = model_state(replica.state)
    if state == "loading" and replica.progress > 0:
        return f"loading {replica.progress:.0%}"
    if state == "failed" and replica.reason:
        return f"failed: {replica.reason}"
    return state


def model_replica_text(replica: controller_pb2.ModelReplicaView) -> str:
    """`edge-1 (ready)`, `edge-2 (loading 45%)`."""
    return f"{replica.node_id} ({model_replica_state(replica)})"


def models_table(models: Sequence[controller_pb2.ModelView], *, wide: bool = False) -> Table:
    """ALIAS, READY, NODES with states, MEMORY; wide adds deployments, tasks and runtimes."""
    headers = ["ALIAS", "READY", "NODES", "MEMORY"]
    if wide:
        headers += ["DEPLOYMENTS", "TASKS", "RUNTIME"]
    table = new_table(*headers)
    for model in models:
        ready = f"{model.ready_replicas}/{len(model.replicas)}"
        short = model.ready_replicas < len(model.replicas)
        row: list[str | Text] = [
            model.alias,
            Text(ready, style="yellow" if short else "green"),
            joined([model_replica_text(r) for r in model.replicas]),
            size(sum(r.memory_bytes for r in model.replicas)),
        ]
        if wide:
            runtimes = sorted({r.runtime for r in model.replicas if r.runtime})
            row += [joined(list(model.deployments)), joined(list(model.tasks)), joined(runtimes)]
        table.add_row(*row)
    return table


def events_table(
    events: Sequence[controller_pb2.Event], *, now: float | None = None, with_object: bool = True
) -> Table:
    """AGE, TYPE, REASON, OBJECT, MESSAGE (OBJECT left out when all are about one thing)."""
    headers = ["AGE", "TYPE", "REASON", *(["OBJECT"] if with_object else []), "MESSAGE"]
    table = new_table(*headers)
    for event in events:
        cells: list[str | Text] = [
            age(event.time, now),
            styled(severity(event.severity)),
            event.reason,
            *([event.object] if with_object else []),
            event.message,
        ]
        table.add_row(*cells)
    return table


def revisions_table(
    revisions: Sequence[controller_pb2.Revision], *, now: float | None = None
) -> Table:
    """REVISION, APPLIED, CAUSE, SOURCE, DIGEST, newest first as the controller sends them."""
    table = new_table("REVISION", "APPLIED", "CAUSE", "SOURCE", "DIGEST")
    for revision in revisions:
        table.add_row(
            str(revision.number),
            age(revision.applied_at, now),
            revision.cause or "-",
            revision.source or "-",
            revision.digest[:12] or "-",
        )
    return table
