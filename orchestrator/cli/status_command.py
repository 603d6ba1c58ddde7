"""`edgectl status`: the whole fleet on one screen (one GetStatus call)."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

from rich.table import Table
from rich.text import Text

from edgefleet.v1 import common_pb2, controller_pb2
from orchestrator.cli.client import add_controller_option, connect
from orchestrator.cli.console import Consoles
from orchestrator.cli.output import (
    add_output_option,
    age,
    agent_state,
    joined,
    model_state,
    new_table,
    node_state,
    node_state_text,
    print_document,
    print_table,
)
from orchestrator.cli.plan_output import unplaced_line
from orchestrator.cli.tables import agents_table, events_table, models_table, node_memory


def register(commands: Any) -> None:
    """Add the `status` command."""
    parser = commands.add_parser(
        "status",
        help="nodes, agents, models, unplaced work and recent events on one screen",
        description="Show the fleet on one screen: what runs where, what is missing, and why.",
    )
    parser.add_argument(
        "--events", type=int, default=10, metavar="N", help="recent events to show (default 10)"
    )
    add_output_option(parser, ("table", "json", "yaml"))
    add_controller_option(parser)
    parser.set_defaults(run=run)


def _node_rows(status: controller_pb2.ClusterStatus, now: float) -> Table:
    table = new_table("NODE", "STATE", "HEARTBEAT", "AGENTS", "MODELS", "MEMORY")
    for node in status.nodes:
        state = node_state_text(node)
        if node.reason and node_state(node.state) != "ready":
            state.append(f" ({node.reason})")
        agents = [
            a.name if agent_state(a.state) == "ready" else f"{a.name} ({agent_state(a.state)})"
            for a in node.agents
        ]
        models = [_model_text(m) for m in node.models]
        table.add_row(
            node.id,
            state,
            age(node.last_heartbeat, now),
            joined(agents),
            joined(models),
            node_memory(node),
        )
    return table


def _model_text(model: common_pb2.ModelStatus) -> str:
    """`phi`, `phi (loading)`, `phi (downloading 45%)`."""
    state = model_state(model.state)
    if state == "ready":
        return model.alias
    if model.HasField("download"):
        done, total = model.download.bytes_done, model.download.bytes_total
        state = f"downloading {done / total:.0%}" if total else "downloading"
    return f"{model.alias} ({state})"


def _deployment_rows(status: controller_pb2.ClusterStatus, now: float) -> Table:
    table = new_table("DEPLOYMENT", "TYPE", "REVISION", "AGENTS READY", "APPLIED")
    for deployment in status.deployments:
        short = deployment.agents_ready < deployment.agents_desired
        table.add_row(
            deployment.name,
            deployment.type or "-",
            str(deployment.revision.number or "-"),
            Text(
                f"{deployment.agents_ready}/{deployment.agents_desired}",
                style="yellow" if short else "green",
            ),
            age(deployment.revision.applied_at, now),
        )
    return table


def _section(consoles: Consoles, title: str, table: Table | None = None) -> None:
    consoles.out.print()
    consoles.out.print(title, style="bold", markup=False)
    if table is not None:
        print_table(table, consoles)


def routes_line(status: controller_pb2.ClusterStatus) -> str:
    """How many nodes route with the current routing table."""
    current = status.routes_generation
    using = sum(1 for n in status.nodes if n.routes_reported and n.routes_generation == current)
    return f"routing table {current}: {using}/{len(status.nodes)} nodes route with it"


def control_plane_line(plane: controller_pb2.ControlPlane) -> str:
    """`Control plane: ROLE, term T, leader ID (ADDRESS), store KIND, writable|read-only`."""
    parts = [plane.role or "single"]
    if plane.term:
        parts.append(f"term {plane.term}")
    if plane.leader_id or plane.leader_address:
        where = f" ({plane.leader_address})" if plane.leader_address else ""
        parts.append(f"leader {plane.leader_id[:8] or '?'}{where}")
    elif plane.role == "standby":
        parts.append("no leader known")
    parts.append(f"store {plane.store_kind or 'sqlite'}")
    parts.append("writable" if plane.writable else f"read-only: {plane.store_detail or '?'}")
    return "Control plane: " + ", ".join(parts)


def print_status(status: controller_pb2.ClusterStatus, consoles: Consoles) -> None:
    """The status screen."""
    now = time.time()
    head = f"controller {status.controller_id or '-'} {status.version}".rstrip()
    if status.gateway_url:
        head += f", gateway {status.gateway_url}"
    consoles.out.print(head, markup=False)
    if status.routes_generation:
        consoles.out.print(routes_line(status), markup=False)
    if status.HasField("control_plane"):
        plane = status.control_plane
        consoles.out.print(
            control_plane_line(plane), markup=False, style=None if plane.writable else "yellow"
        )
    if status.deployments:
        _section(consoles, "Deployments", _deployment_rows(status, now))
    states = Counter(node_state(n.state) for n in status.nodes)
    counts = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    cordoned = sum(1 for n in status.nodes if n.mark == "cordoned")
    if cordoned:  # draining is a state of its own; cordoned ready nodes count as ready too
        counts += f"; {cordoned} cordoned"
    _section(consoles, f"Nodes ({counts or 'none'})", _node_rows(status, now) if states else None)
    if not states:
        consoles.out.print("no node has joined yet", style="dim", markup=False)
    if status.agents:
        _section(consoles, "Agents", agents_table(status.agents))
    if status.models:
        _section(consoles, "Models", models_table(status.models))
    unplaced = [item for d in status.deployments for item in d.unplaced]
    if unplaced:
        _section(consoles, "Not placed")
        for item in unplaced:
            consoles.out.print(unplaced_line(item, show_deployment=True))
    if status.events:
        _section(consoles, "Recent events", events_table(status.events, now=now))


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """One GetStatus call, shown as a screen or as the proto's JSON/YAML."""
    with connect(args) as controller:
        status = controller.call(
            "GetStatus",
            controller_pb2.GetStatusRequest(events=max(args.events, 1)),
            controller_pb2.ClusterStatus,
        )
    if args.output == "table":
        print_status(status, consoles)
    else:
        print_document(status, args.output, consoles)
    return 0
