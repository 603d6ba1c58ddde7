"""What the scheduler reads and what it decides: nodes as it sees them, placements, plans.

The scheduler is pure: `schedule(deployments, nodes, previous)` reads only these
values and returns a `Schedule`; it never talks to a node or a store. The same
`Plan` is what `edgectl diff` prints and what `apply` carries out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from edgefleet_contract.desired import NodeDesired

NodeState = Literal["ready", "suspect", "not-ready", "untrusted", "draining"]
Status = NodeState | Literal["absent"]
"""A node's state as the scheduler reads it, or `absent`: named somewhere (a manifest, a
cordon) but not heard from."""
StepAction = Literal[
    "load-model", "unload-model", "evict-model", "start-agent", "stop-agent", "update-agent"
]


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node as the scheduler sees it."""

    id: str
    state: Status
    """`absent` is the same as leaving the node out of the list, but for `cordoned`."""
    memory_total_bytes: int = 0
    """0: unknown (the node has not reported yet); budgets then cannot be checked."""
    labels: Mapping[str, str] = field(default_factory=dict)
    ready_models: frozenset[str] = frozenset()
    """Models the node reports ready (used to prefer nodes that have a model already)."""
    ready_agents: frozenset[str] = frozenset()
    """Agents the node reports ready (used to fail back without a gap in service)."""
    cordoned: bool = False
    """No new replica goes there, neither spread nor pinned; what runs there stays (unless
    the node is `draining`, which moves it)."""


Assignment = Mapping[str, NodeDesired]
"""What each node should run, by node id. `generation` is not the scheduler's business:
the reconciler numbers what changed."""


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One thing the plan does on one node."""

    action: StepAction
    node: str
    name: str
    """Model alias or agent name."""
    deployment: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unplaced:
    """Something that could not be placed (fully), and why."""

    kind: Literal["agent", "model"]
    name: str
    deployment: str
    missing: int
    """Replicas short of the desired count."""
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The ordered steps from the previous assignment to the new one, and what is left out."""

    steps: tuple[PlanStep, ...] = ()
    unplaced: tuple[Unplaced, ...] = ()

    @property
    def changed(self) -> bool:
        """True when the plan does anything."""
        return bool(self.steps)


@dataclass(frozen=True, slots=True)
class Schedule:
    """The scheduler's answer: the new assignment and the plan that gets there."""

    assignment: dict[str, NodeDesired]
    plan: Plan
