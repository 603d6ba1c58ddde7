"""What there is to place: every deployment's agents and models as workloads.

A workload is one agent or one model of one deployment, with how many replicas it
wants, the nodes the manifest pins it to and the nodes it may run on at all. Models
that agents use travel with those agents; a model becomes a workload of its own only
when the manifest pins it to nodes, or when nothing uses it (one replica somewhere).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from edgefleet_contract.desired import AgentWant, ModelWant, NodeLimits
from edgefleet_contract.model_source import is_remote
from orchestrator.manifest.desired import (
    AgentSpec,
    DesiredState,
    FailoverMode,
    ModelSpec,
    ResourceLimits,
)
from orchestrator.scheduler.budget import combine_limits
from orchestrator.scheduler.model import KnownBlob

Kind = Literal["agent", "model"]


@dataclass(frozen=True, slots=True)
class Workload:
    """One agent or model of one deployment, as the scheduler places it."""

    kind: Kind
    name: str
    deployment: str
    model: str
    """The model it needs on its node (a model workload needs itself)."""
    replicas: int
    pinned: tuple[str, ...]
    """Nodes the manifest puts it on, sorted."""
    candidates: tuple[str, ...]
    """Nodes it may run on at all (the deployment's nodes), sorted."""
    failover: FailoverMode
    failback: bool
    fixed: bool = False
    """Single-device: on its pinned node whatever that node's state; never moves."""

    @property
    def order(self) -> tuple[str, int, str]:
        """Processing order: by deployment, models before the agents that may use them."""
        return (self.deployment, 0 if self.kind == "model" else 1, self.name)


@dataclass(frozen=True, slots=True)
class Catalog:
    """Everything the current deployments ask for, in the scheduler's terms."""

    workloads: tuple[Workload, ...]
    models: Mapping[str, ModelWant]
    agents: Mapping[str, AgentWant]
    owners: Mapping[tuple[Kind, str], str]
    """Which deployment an agent or model belongs to (a shared model: the first by name)."""
    limits: Mapping[str, NodeLimits]
    """Limits of every node some deployment names (or the local node)."""
    places: Mapping[str, frozenset[str]]
    """The nodes each deployment (current or retired) may use."""
    declares: Mapping[str, tuple[str, ...]]
    """The deployments that declare each model alias: current ones first, by name."""

    def model_owner(self, node: str, alias: str) -> str | None:
        """The deployment a model on a node belongs to; None: to no deployment."""
        return next((d for d in self.declares.get(alias, ()) if node in self.places[d]), None)


def build_catalog(
    deployments: Sequence[DesiredState],
    local_node: str,
    retired: Sequence[DesiredState] = (),
    known: Mapping[str, KnownBlob] | None = None,
) -> Catalog:
    """The workloads, model and agent specs, owners and node limits of `deployments`.

    `retired` deployments place nothing; they only name the owner of what is removed.
    `known` holds what the fleet learned of each remote source's blob (see `with_known`).
    """
    ordered = sorted(deployments, key=lambda d: d.name)
    workloads: list[Workload] = []
    resources: dict[str, list[ResourceLimits]] = {}
    for deployment in ordered:
        workloads += _workloads(deployment, local_node)
        for node, limits in _node_resources(deployment, local_node):
            resources.setdefault(node, []).append(limits)
    owners: dict[tuple[Kind, str], str] = {}
    declares: dict[str, list[str]] = {}
    places: dict[str, frozenset[str]] = {}
    for deployment in [*ordered, *sorted(retired, key=lambda d: d.name)]:
        places.setdefault(
            deployment.name, frozenset(n for n, _ in _node_resources(deployment, local_node))
        )
        for model in deployment.models:
            owners.setdefault(("model", model.alias), deployment.name)
            declares.setdefault(model.alias, []).append(deployment.name)
        for agent in deployment.agents:
            owners.setdefault(("agent", agent.name), deployment.name)
    return Catalog(
        workloads=tuple(sorted(workloads, key=lambda w: w.order)),
        models={a: with_known(m, known or {}) for a, m in _model_wants(ordered).items()},
        agents={a.name: _agent_want(a) for d in ordered for a in d.agents},
        owners=owners,
        limits={node: combine_limits(found) for node, found in sorted(resources.items())},
        places=places,
        declares={alias: tuple(names) for alias, names in declares.items()},
    )


def _node_resources(deployment: DesiredState, local_node: str) -> list[tuple[str, ResourceLimits]]:
    if deployment.type == "single-device":
        return [(local_node, deployment.resources)]
    return [(node.id, node.resources or deployment.resources) for node in deployment.nodes]


def _workloads(deployment: DesiredState, local_node: str) -> list[Workload]:
    name = deployment.name
    if deployment.type == "single-device":
        box = (local_node,)
        models = [
            Workload("model", m.alias, name, m.alias, 1, box, box, "none", False, fixed=True)
            for m in deployment.models
        ]
        return models + [
            Workload("agent", a.name, name, a.model, 1, box, box, "none", False, fixed=True)
            for a in deployment.agents
        ]
    mode, back = deployment.coordination.failover, deployment.coordination.failback
    nodes = tuple(sorted({n.id for n in deployment.nodes}))
    used = {a.model for a in deployment.agents}
    found: list[Workload] = []
    for model in deployment.models:
        alias = model.alias
        pinned = tuple(sorted({n.id for n in deployment.nodes if alias in n.models}))
        if pinned or alias not in used:
            count = len(pinned) or 1
            found.append(Workload("model", alias, name, alias, count, pinned, nodes, mode, back))
    for agent in deployment.agents:
        pinned = tuple(sorted(set(agent.preferred_nodes)))
        allowed = tuple(sorted({*nodes, *pinned}))
        count = max(agent.replicas, 1)
        found.append(
            Workload("agent", agent.name, name, agent.model, count, pinned, allowed, mode, back)
        )
    return found


def _model_wants(deployments: Sequence[DesiredState]) -> dict[str, ModelWant]:
    """One want per alias: the first declaration by deployment name, completed by the others.

    Conflicting declarations are refused before this (see `check_conflicts`); a detail
    one deployment leaves to the node's catalog is taken from one that sets it.
    """
    specs: dict[str, list[ModelSpec]] = {}
    for deployment in deployments:
        for model in deployment.models:
            specs.setdefault(model.alias, []).append(model)
    wants: dict[str, ModelWant] = {}
    for alias, found in specs.items():
        tasks: list[str] = []
        for spec in found:
            tasks += [t for t in spec.tasks if t not in tasks]
        wants[alias] = ModelWant(
            alias=alias,
            runtime=next((s.runtime for s in found if s.runtime), ""),
            source=next((s.source for s in found if s.source), ""),
            quantization=next((s.quantization for s in found if s.quantization), ""),
            memory_bytes=next((s.memory_bytes for s in found if s.memory_bytes), 0),
            tasks=tuple(tasks),
            parallel=next((s.parallel for s in found if s.parallel), 0),
            context=next((s.context for s in found if s.context), 0),
            sha256=next((s.sha256 for s in found if s.sha256), ""),
        )
    return wants


def with_known(want: ModelWant, known: Mapping[str, KnownBlob]) -> ModelWant:
    """The want with the hash and size the fleet learned for its remote source.

    A hash the manifest pins is never replaced; the learned size completes it only when
    the learned hash is the pinned one.
    """
    blob = known.get(want.source) if is_remote(want.source) else None
    if blob is None or (want.sha256 and want.sha256 != blob.sha256):
        return want
    return want.model_copy(update={"sha256": blob.sha256, "size_bytes": blob.size})


def _agent_want(agent: AgentSpec) -> AgentWant:
    return AgentWant(
        name=agent.name,
        model=agent.model,
        tools=agent.tools,
        instructions=agent.instructions,
        tasks=agent.tasks,
        tool_config={tool: dict(config) for tool, config in agent.tool_config.items()},
    )
