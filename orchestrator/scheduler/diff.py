"""From one assignment to another: the ordered steps of a plan.

Usable on its own (`edgectl delete` compares the assignment with one where the
deployment's work is gone); the scheduler adds why it put or took each thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edgefleet_contract.desired import AgentWant, ModelWant, NodeDesired
from orchestrator.scheduler.model import Assignment, PlanStep, StepAction
from orchestrator.scheduler.workloads import Kind

StepKey = tuple[str, Kind, str]
"""(node, kind, name): one model or agent on one node."""

_EMPTY = NodeDesired()
_ORDER: dict[StepAction, int] = {
    "load-model": 0,
    "start-agent": 1,
    "update-agent": 2,
    "stop-agent": 3,
    "unload-model": 4,
}
_MODEL_FIELDS = (
    "runtime",
    "source",
    "quantization",
    "memory_bytes",
    "tasks",
    "parallel",
    "context",
    "sha256",
    "size_bytes",
)
_AGENT_FIELDS = ("model", "instructions", "tools", "tool_config", "tasks")


@dataclass(frozen=True, slots=True)
class Why:
    """Why something was put on or taken off a node, and for which deployment."""

    deployment: str
    reason: str


@dataclass(frozen=True, slots=True)
class Reasons:
    """What the scheduler knows about the changes it made, by (node, kind, name)."""

    added: Mapping[StepKey, Why] = field(default_factory=dict)
    removed: Mapping[StepKey, Why] = field(default_factory=dict)


def plan_diff(
    previous: Assignment,
    new: Assignment,
    *,
    reasons: Reasons | None = None,
    owners: Mapping[tuple[Kind, str], str] | None = None,
    default_owner: str = "",
    removed_reason: str = "removed from the manifest",
) -> tuple[PlanStep, ...]:
    """The steps from `previous` to `new`: nodes by id; on each node loads, starts,
    updates, stops, then unloads, each by name.

    A model whose details changed is loaded again (one `load-model`). Generations and
    limits are not steps: the node gets them with its whole desired state. `owners`
    names the deployment of an agent or model (`default_owner` when it does not);
    `removed_reason` explains what is gone from every node.
    """
    why = reasons or Reasons()
    owner_of = owners or {}
    hosts: dict[str, list[str]] = {}
    everywhere: set[str] = set()
    for node in sorted(new):
        for agent in new[node].agents:
            hosts.setdefault(agent.name, []).append(node)
        everywhere.update(m.alias for m in new[node].models)
    steps: list[PlanStep] = []
    for node in sorted({*previous, *new}):
        old, cur = previous.get(node, _EMPTY), new.get(node, _EMPTY)
        found: list[tuple[StepAction, Kind, str, str]] = []
        old_models = {m.alias: m for m in old.models}
        new_models = {m.alias: m for m in cur.models}
        old_agents = {a.name: a for a in old.agents}
        new_agents = {a.name: a for a in cur.agents}
        for alias, model in new_models.items():
            if alias not in old_models:
                found.append(("load-model", "model", alias, _needed_by(alias, cur)))
            elif not old_models[alias].same_model(model):
                changed = _changed(old_models[alias], model, _MODEL_FIELDS)
                found.append(("load-model", "model", alias, f"changed: {changed} (reload)"))
        for name, agent in new_agents.items():
            if name not in old_agents:
                found.append(("start-agent", "agent", name, "assigned to this node"))
            elif old_agents[name] != agent:
                changed = _changed(old_agents[name], agent, _AGENT_FIELDS)
                found.append(("update-agent", "agent", name, f"changed: {changed}"))
        for name in old_agents.keys() - new_agents.keys():
            elsewhere = hosts.get(name)
            default = f"moved to {', '.join(elsewhere)}" if elsewhere else removed_reason
            found.append(("stop-agent", "agent", name, default))
        for alias in old_models.keys() - new_models.keys():
            default = "no longer needed on this node" if alias in everywhere else removed_reason
            found.append(("unload-model", "model", alias, default))
        for action, kind, name, default in sorted(found, key=lambda f: (_ORDER[f[0]], f[2])):
            table = why.removed if action in ("stop-agent", "unload-model") else why.added
            given = table.get((node, kind, name)) if action != "update-agent" else None
            is_change = action == "load-model" and name in old_models
            if given is not None and not is_change:
                deployment, reason = given.deployment, given.reason
            else:
                deployment, reason = owner_of.get((kind, name), default_owner), default
            steps.append(PlanStep(action, node, name, deployment, reason))
    return tuple(steps)


def _needed_by(alias: str, desired: NodeDesired) -> str:
    users = sorted(a.name for a in desired.agents if a.model == alias)
    return f"needed by agent `{users[0]}`" if users else "wanted on this node"


def _changed(
    old: ModelWant | AgentWant, new: ModelWant | AgentWant, fields: tuple[str, ...]
) -> str:
    return ", ".join(f for f in fields if getattr(old, f) != getattr(new, f)) or "details"
