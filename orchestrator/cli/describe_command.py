"""`edgectl describe node|agent|model NAME`: everything known about one object, and its events."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from edgefleet.v1 import controller_pb2
from orchestrator.cli.client import CALL_TIMEOUT_S, Controller, add_controller_option, connect
from orchestrator.cli.console import Consoles
from orchestrator.cli.output import (
    age,
    agent_state,
    joined,
    millis,
    model_state,
    new_table,
    node_state,
    print_table,
    size,
    styled,
)
from orchestrator.cli.rollout import replica_text
from orchestrator.cli.tables import events_table, node_memory
from orchestrator.errors import EdgeFleetError

EVENTS_SHOWN = 20
KINDS = ("node", "agent", "model")


def register(commands: Any) -> None:
    """Add the `describe` command."""
    parser = commands.add_parser(
        "describe",
        help="show everything known about one node, agent or model",
        description="Show one node, agent or model in detail, with its recent events.",
    )
    parser.add_argument("kind", choices=KINDS, help="what to describe")
    parser.add_argument("name", metavar="NAME")
    add_controller_option(parser)
    parser.set_defaults(run=run)


def _fields(consoles: Consoles, pairs: Sequence[tuple[str, str]]) -> None:
    width = max(len(key) for key, _ in pairs) + 2
    for key, value in pairs:
        consoles.out.print(f"{key + ':':<{width}}{value or '-'}", markup=False)


def _block(consoles: Consoles, title: str, table: Table) -> None:
    consoles.out.print()
    consoles.out.print(f"{title}:", markup=False)
    if table.row_count:
        print_table(table, consoles, indent=2)
    else:
        consoles.out.print("  none", markup=False)


def _unknown(kind: str, name: str, known: Sequence[str]) -> EdgeFleetError:
    return EdgeFleetError(f"no {kind} named {name}; known: {joined(sorted(known)) or 'none'}")


def _describe_node(node: controller_pb2.NodeView, consoles: Consoles, now: float) -> None:
    state = node_state(node.state)
    since = f" for {age(node.state_since, now)}" if node.state_since.seconds else ""
    capacity, load = node.capacity, node.load
    _fields(
        consoles,
        [
            ("Name", node.id),
            ("State", f"{state}{since}" + (f" ({node.reason})" if node.reason else "")),
            ("Maintenance", _maintenance(node, now)),
            ("Address", node.address),
            ("Discovered by", node.discovered_by),
            ("Version", node.version),
            ("Labels", ", ".join(f"{k}={v}" for k, v in sorted(node.labels.items()))),
            ("Last heartbeat", f"{age(node.last_heartbeat, now)} ago"),
            ("Generation", f"{node.generation} (node runs {node.observed_generation})"),
            (
                "Capacity",
                f"{capacity.cpu_count} CPUs, {size(capacity.memory_total_bytes)} memory "
                f"({size(capacity.memory_available_bytes)} available), accelerators: "
                f"{joined(list(capacity.accelerators))}",
            ),
            (
                "Load",
                f"{load.in_flight} in flight, {load.queue_depth} queued, latency EWMA "
                f"{millis(load.latency_ewma_ms)}, models use {node_memory(node)}",
            ),
        ],
    )
    models = new_table("ALIAS", "STATE", "MEMORY", "RUNTIME", "IN-FLIGHT", "QUEUE", "LAST USED")
    for model in node.models:
        word = model_state(model.state)
        if model.reason:
            word += f": {model.reason}"
        models.add_row(
            model.alias,
            styled(word),
            size(model.memory_bytes),
            model.runtime or "-",
            str(model.in_flight),
            str(model.queue_depth),
            age(model.last_used, now),
        )
    _block(consoles, "Models", models)
    agents = new_table("NAME", "MODEL", "STATE", "IN-FLIGHT", "QUEUE", "EWMA", "REQUESTS", "FAILED")
    for agent in node.agents:
        word = agent_state(agent.state) + (f": {agent.reason}" if agent.reason else "")
        agents.add_row(
            agent.name,
            agent.model or "-",
            styled(word),
            str(agent.in_flight),
            str(agent.queue_depth),
            millis(agent.latency_ewma_ms),
            str(agent.requests_total),
            str(agent.failures_total),
        )
    _block(consoles, "Agents", agents)


def _maintenance(node: controller_pb2.NodeView, now: float) -> str:
    """`cordoned for 5m: no new work (reason: …)`; empty when the node is not marked."""
    if not node.mark:
        return ""
    if node.mark == "cordoned":
        what = "no new work; what runs there stays"
    elif node.drained:
        what = "drained: nothing runs there, no new work"
    else:
        what = "its agents and models move to other nodes"
    reason = f" (reason: {node.mark_reason})" if node.mark_reason else ""
    return f"{node.mark} for {age(node.marked_at, now)}: {what}{reason}"


def _describe_agent(agent: controller_pb2.AgentView, consoles: Consoles) -> None:
    pairs = [
        ("Name", agent.name),
        ("Deployment", agent.deployment),
        ("Model", agent.model),
        ("Tools", ", ".join(agent.tools)),
        ("Replicas", f"{agent.ready_replicas} ready of {agent.desired_replicas} desired"),
    ]
    if agent.unplaced_reason:
        pairs.append(("Not placed", agent.unplaced_reason))
    _fields(consoles, pairs)
    replicas = new_table("NODE", "STATE", "PREFERRED", "IN-FLIGHT", "QUEUE", "EWMA", "CIRCUIT")
    for replica in agent.replicas:
        word = agent_state(replica.state) + (f": {replica.reason}" if replica.reason else "")
        replicas.add_row(
            replica.node_id,
            styled(word),
            "yes" if replica.preferred else "no",
            str(replica.in_flight),
            str(replica.queue_depth),
            millis(replica.latency_ewma_ms),
            replica.circuit or "-",
        )
    _block(consoles, "Replicas", replicas)


def _describe_model(model: controller_pb2.ModelView, consoles: Consoles) -> None:
    _fields(
        consoles,
        [
            ("Alias", model.alias),
            ("Deployments", ", ".join(model.deployments)),
            ("Tasks", ", ".join(model.tasks)),
            ("Replicas", f"{model.ready_replicas} ready of {len(model.replicas)}"),
        ],
    )
    replicas = new_table("NODE", "STATE", "MEMORY", "RUNTIME", "IN-FLIGHT", "EWMA", "CIRCUIT")
    for replica in model.replicas:
        replicas.add_row(
            replica.node_id,
            styled(replica_text(replica)),
            size(replica.memory_bytes),
            replica.runtime or "-",
            str(replica.in_flight),
            millis(replica.latency_ewma_ms),
            replica.circuit or "-",
        )
    _block(consoles, "Replicas", replicas)


def _events(controller: Controller, kind: str, name: str) -> list[controller_pb2.Event]:
    request = controller_pb2.WatchEventsRequest(
        object=f"{kind}/{name}", follow=False, limit=EVENTS_SHOWN
    )
    events = controller.stream("WatchEvents", request, controller_pb2.Event, CALL_TIMEOUT_S)
    return list(events)  # the newest EVENTS_SHOWN, oldest first


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """Find the object in its List call, show it, then its events."""
    now = time.time()
    with connect(args) as controller:
        if args.kind == "node":
            nodes = controller.call(
                "ListNodes", controller_pb2.ListNodesRequest(), controller_pb2.ListNodesResponse
            ).nodes
            node = next((n for n in nodes if n.id == args.name), None)
            if node is None:
                raise _unknown("node", args.name, [n.id for n in nodes])
            _describe_node(node, consoles, now)
        elif args.kind == "agent":
            agents = controller.call(
                "ListAgents", controller_pb2.ListAgentsRequest(), controller_pb2.ListAgentsResponse
            ).agents
            agent = next((a for a in agents if a.name == args.name), None)
            if agent is None:
                raise _unknown("agent", args.name, [a.name for a in agents])
            _describe_agent(agent, consoles)
        else:
            models = controller.call(
                "ListModels", controller_pb2.ListModelsRequest(), controller_pb2.ListModelsResponse
            ).models
            model = next((m for m in models if m.alias == args.name), None)
            if model is None:
                raise _unknown("model", args.name, [m.alias for m in models])
            _describe_model(model, consoles)
        events = _events(controller, args.kind, args.name)
    _block(consoles, "Events", events_table(events, now=now, with_object=False))
    return 0
