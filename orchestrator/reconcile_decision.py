"""What one reconcile pass decides, as a value: computed without touching anything.

`decide` reads the current deployments, the fleet as the scheduler sees it,
the stored assignment and what each node last reported, and returns a
`Decision`: which nodes get a new assignment (and which of them must be
numbered above what they report), the plan steps to record, and, once the
store has numbered the renewed nodes, every node's desired state to push. The
reconciler carries a decision out; nothing here knows of stores, links or
events, so the same inputs always give the same decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgefleet_contract.desired import NodeDesired
from orchestrator.manifest.desired import DesiredState
from orchestrator.scheduler import schedule
from orchestrator.scheduler.model import KnownBlob, NodeView, PlanStep, Schedule


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What a node that has reported says, as far as a pass cares."""

    generation: int
    """The generation it runs."""
    runs_work: bool
    """Whether it runs any model or agent."""


@dataclass(frozen=True, slots=True)
class Stored:
    """The assignment as the store holds it."""

    assignment: Mapping[str, NodeDesired]
    """Each node's desired state, with its generation."""
    contents: Mapping[str, str]
    """Each node's `content_key()` as saved (kept, not recomputed on every pass)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What a pass does: the schedule, the nodes it renews, and what to tell every node."""

    schedule: Schedule
    renew: Mapping[str, NodeDesired]
    """Nodes that get a new assignment, with what they should run (not yet numbered)."""
    force: tuple[str, ...]
    """Renewed nodes that report a generation above the store's (restored from a backup,
    or numbered by another controller): they get a new generation even if the store
    holds the same content."""
    generation_floor: int
    """The store's generation counter must reach this before numbering (0: as it is)."""
    steps: tuple[PlanStep, ...]
    """The plan steps on renewed nodes, in plan order: what is recorded as events."""

    def contents(self) -> dict[str, str]:
        """The content of each renewed node, as the store saves and compares it."""
        return {node: desired.content_key() for node, desired in self.renew.items()}

    def assignment(
        self, stored: Stored, generations: Mapping[str, int], controller_id: str
    ) -> dict[str, NodeDesired]:
        """Every node's desired state to push, once the store numbered the renewed nodes.

        `generations` is what the store handed out; a renewed node it left out (it
        already held that content) keeps its stored state.
        """
        assignment = dict(stored.assignment)
        for node, generation in generations.items():
            assignment[node] = stamped(self.renew[node], generation, controller_id)
        return assignment


def stamped(desired: NodeDesired, generation: int, controller_id: str) -> NodeDesired:
    """`desired` as sent to its node: with its generation and the sending controller."""
    return desired.model_copy(update={"generation": generation, "controller_id": controller_id})


def decide(
    deployments: Sequence[DesiredState],
    views: Sequence[NodeView],
    stored: Stored,
    reports: Mapping[str, NodeReport],
    *,
    local_node: str,
    known: Mapping[str, KnownBlob] | None = None,
) -> Decision:
    """One pass's decision; `reports` holds every node that has reported, by id; `known`
    the blobs learned per remote source (their hash and size go into the models that
    have no pin)."""
    result = schedule(deployments, views, stored.assignment, local_node=local_node, known=known)
    wanted = dict(result.assignment)
    for node, report in sorted(reports.items()):
        # A node that runs work nobody assigned it (a stray, or one left over from
        # another controller) is told to run nothing.
        if node not in wanted and report.runs_work:
            wanted[node] = NodeDesired()
    renewed = {
        node
        for node, desired in wanted.items()
        if stored.contents.get(node) != desired.content_key()
    }
    ahead = _ahead(wanted, stored, reports)
    renewed.update(ahead)
    return Decision(
        schedule=result,
        renew={node: wanted[node] for node in sorted(renewed)},
        force=tuple(sorted(ahead)),
        generation_floor=max(ahead.values(), default=0),
        steps=tuple(step for step in result.plan.steps if step.node in renewed),
    )


def needs_push(current: NodeDesired | None, wanted: NodeDesired, *, downloading: bool) -> bool:
    """Whether a node's link must be handed `wanted` (its state with peers filled in).

    Another generation or content always; other peers only while the node is still
    downloading a blob (a node that has its blobs has no use for them).
    """
    if current is None or current.generation != wanted.generation:
        return True
    if current.controller_id != wanted.controller_id:
        return True
    if current.content_key() != wanted.content_key():
        return True
    return downloading and current != wanted


def _ahead(
    wanted: Mapping[str, NodeDesired], stored: Stored, reports: Mapping[str, NodeReport]
) -> dict[str, int]:
    """Nodes that report a newer generation than the store gave them: they need one
    above theirs, or they would refuse what they are sent as stale."""
    ahead: dict[str, int] = {}
    for node in wanted:
        report = reports.get(node)
        current = stored.assignment.get(node)
        if report is not None and report.generation > (current.generation if current else 0):
            ahead[node] = report.generation
    return ahead
