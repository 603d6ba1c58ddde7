"""Where a drain stands, from what the controller knows: a pure function of its inputs.

An item is an agent or model the draining node still runs (as it reports) or is still
assigned. Its targets are the nodes that took it over: assigned it since the drain
began (every other node assigned it, when the start is not known, e.g. after a
controller restart), with its state there. It is `blocked` when the scheduler could
not replace it (no room, too few nodes) or it belongs to a single-device deployment;
otherwise it is moving (its replacement is not ready yet) or stopping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgefleet.v1 import common_pb2, controller_pb2, node_pb2
from edgefleet_contract.desired import NodeDesired
from orchestrator.fleet.status_events import is_empty
from orchestrator.manifest.desired import DesiredState
from orchestrator.scheduler.model import NodeState, Plan
from orchestrator.store import NodeMarkRow
from orchestrator.views import NODE_STATES

_EMPTY = NodeDesired()


@dataclass(frozen=True, slots=True)
class DrainInputs:
    """What the controller knows of a node being drained and of the rest of the fleet."""

    node_id: str
    state: NodeState | None
    """The node's state (None: no connection to it)."""
    mark: NodeMarkRow | None
    status: node_pb2.NodeStatus | None
    """What the node last reported (None: never)."""
    desired: NodeDesired | None
    """What the node was last told to run (None: nothing yet)."""
    assignment: Mapping[str, NodeDesired]
    statuses: Mapping[str, node_pb2.NodeStatus]
    """Every node's latest status, by id."""
    plan: Plan | None
    """The latest schedule's plan (its `unplaced` say why work is short of replicas)."""
    deployments: Sequence[DesiredState]
    hosts_before: Mapping[tuple[str, str], frozenset[str]] | None = None
    """(kind, name) -> the other nodes assigned it when the drain began; None: unknown."""


def drain_progress(inputs: DrainInputs) -> controller_pb2.DrainProgress:
    """The node's drain: what is left, where it moves, what cannot move and why."""
    node, status = inputs.node_id, inputs.status
    assigned = inputs.assignment.get(node, _EMPTY)
    agents_here = {a.name: a.model for a in assigned.agents}
    reported_agents = {a.name: a for a in status.agents} if status else {}
    reported_models = {m.alias: m for m in status.models} if status else {}
    unplaced = {(u.kind, u.name): u.reason for u in inputs.plan.unplaced} if inputs.plan else {}
    fixed = _single_device(inputs.deployments)
    items: list[controller_pb2.DrainItem] = []
    blocked_agents: set[str] = set()
    for name in sorted({*reported_agents, *agents_here}):
        reported = reported_agents.get(name)
        item = controller_pb2.DrainItem(
            kind="agent",
            name=name,
            state=_agent_word(reported.state) if reported else "pending",
            targets=_targets(inputs, "agent", name),
        )
        if name in agents_here:
            item.blocked = _blocked(unplaced.get(("agent", name)), fixed.get(name))
        if item.blocked:
            blocked_agents.add(name)
        items.append(item)
    models_here = {m.alias for m in assigned.models}
    for alias in sorted({*reported_models, *models_here}):
        reported_model = reported_models.get(alias)
        item = controller_pb2.DrainItem(
            kind="model",
            name=alias,
            state=_model_word(reported_model.state) if reported_model else "pending",
            targets=_targets(inputs, "model", alias),
        )
        if alias in models_here:
            users = sorted(a for a, m in agents_here.items() if m == alias and a in blocked_agents)
            why = unplaced.get(("model", alias))
            if why is None and users:
                why = f"agent `{users[0]}` uses it here and cannot move"
            item.blocked = _blocked(why, fixed.get(alias))
        items.append(item)
    drained = inputs.state == "draining" and status is not None and is_empty(status, inputs.desired)
    progress = controller_pb2.DrainProgress(
        node_id=node,
        state=NODE_STATES[inputs.state] if inputs.state else common_pb2.NODE_STATE_NOT_READY,
        mark=inputs.mark.mark if inputs.mark else "",
        drained=drained,
        items=items,
    )
    progress.waiting = _waiting(inputs, drained, bool(items))
    return progress


def _targets(inputs: DrainInputs, kind: str, name: str) -> list[controller_pb2.DrainTarget]:
    """The nodes that took the item over, with its state there."""
    before = inputs.hosts_before.get((kind, name), frozenset()) if inputs.hosts_before else ()
    targets = []
    for other, desired in sorted(inputs.assignment.items()):
        if other == inputs.node_id or other in before:
            continue
        names = [a.name for a in desired.agents] if kind == "agent" else []
        names += [m.alias for m in desired.models] if kind == "model" else []
        if name in names:
            targets.append(
                controller_pb2.DrainTarget(
                    node_id=other, state=_state_on(inputs, other, kind, name)
                )
            )
    return targets


def _state_on(inputs: DrainInputs, node: str, kind: str, name: str) -> str:
    status = inputs.statuses.get(node)
    if status is None:
        return "pending"
    desired = inputs.assignment.get(node)
    if desired is not None and status.generation != desired.generation:
        return "pending"  # the node has not heard of it yet
    if kind == "agent":
        agent = next((a for a in status.agents if a.name == name), None)
        return _agent_word(agent.state) if agent else "pending"
    model = next((m for m in status.models if m.alias == name), None)
    return _model_word(model.state) if model else "pending"


def _blocked(unplaced: str | None, fixed_in: str | None) -> str:
    """Why an item still assigned to the draining node cannot move (empty: it moves)."""
    if unplaced:
        return unplaced
    if fixed_in is not None:
        return f"single-device deployment `{fixed_in}` runs it only on its local node"
    return ""


def _waiting(inputs: DrainInputs, drained: bool, has_items: bool) -> str:
    """Why the drain cannot be confirmed now, apart from the items."""
    node, state = inputs.node_id, inputs.state
    if inputs.mark is None or inputs.mark.mark != "draining":
        return f"node `{node}` is not draining"
    if state is None:
        return f"node `{node}` is not connected: it cannot report what it still runs"
    if state != "draining":
        return f"node `{node}` is {state}: it cannot confirm it is empty until it is ready"
    if not drained and not has_items:
        return f"waiting for `{node}` to apply its new assignment"
    return ""


def _single_device(deployments: Sequence[DesiredState]) -> dict[str, str]:
    """Agents and models of single-device deployments → the deployment's name."""
    found: dict[str, str] = {}
    for d in deployments:
        if d.type == "single-device":
            found.update((a.name, d.name) for a in d.agents)
            found.update((m.alias, d.name) for m in d.models)
    return found


def _agent_word(state: int) -> str:
    return common_pb2.AgentState.Name(state).removeprefix("AGENT_STATE_").lower()


def _model_word(state: int) -> str:
    return common_pb2.ModelState.Name(state).removeprefix("MODEL_STATE_").lower()


def hosts(
    assignment: Mapping[str, NodeDesired], node_id: str
) -> dict[tuple[str, str], frozenset[str]]:
    """(kind, name) of everything assigned to the node -> the other nodes assigned it."""

    def keys(desired: NodeDesired) -> list[tuple[str, str]]:
        return [("agent", a.name) for a in desired.agents] + [
            ("model", m.alias) for m in desired.models
        ]

    found: dict[tuple[str, str], set[str]] = {
        k: set() for k in keys(assignment.get(node_id, _EMPTY))
    }
    for other, desired in assignment.items():
        for key in keys(desired) if other != node_id else []:
            if key in found:
                found[key].add(other)
    return {key: frozenset(nodes) for key, nodes in found.items()}
