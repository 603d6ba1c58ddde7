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
    blobs: frozenset[str] = frozenset()
    """SHA-256 of the model blobs the node holds whole (used to prefer nodes that need not
    download a model, and to tell what each node must fetch)."""


@dataclass(frozen=True, slots=True)
class KnownBlob:
    """What the fleet has learned about the blob of a model source."""

    sha256: str
    size: int = 0
    """Bytes; 0: unknown."""


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
    fetch: Fetch | None = None
    """For `load-model`: the blob the node must download first (None: it needs none)."""


@dataclass(frozen=True, slots=True)
class Fetch:
    """A model blob a node must download before it can load the model."""

    size: int
    """Bytes; 0: not known yet (the blob was never downloaded by the fleet)."""

    def __str__(self) -> str:
        return f"fetch {size_text(self.size)}" if self.size else "fetch (size unknown)"


def size_text(count: int) -> str:
    """Bytes for people, as plans and progress say them: `135.2 MiB`, `512 B`."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


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
