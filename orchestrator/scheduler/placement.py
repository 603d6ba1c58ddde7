"""Where every agent and model runs: a pure function of desired state, nodes and the last
assignment.

`schedule` runs passes of the stages (`stages.Pass`: sort, reserve, pin, spread,
settle) until the assignment no longer changes; `diff` turns the new assignment into
the plan, with why each thing was put on or taken off a node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edgefleet_contract.desired import NodeDesired
from orchestrator.errors import PlacementError
from orchestrator.manifest.desired import LOCAL_NODE, DesiredState
from orchestrator.scheduler.conflicts import check_conflicts
from orchestrator.scheduler.diff import Reasons, StepKey, Why, plan_diff
from orchestrator.scheduler.fetches import with_fetches
from orchestrator.scheduler.fleet_view import FleetView
from orchestrator.scheduler.holdings import EMPTY
from orchestrator.scheduler.model import Assignment, KnownBlob, NodeView, Plan, Schedule
from orchestrator.scheduler.stages import Pass
from orchestrator.scheduler.workloads import Catalog, build_catalog

_MAX_ROUNDS = 4


def schedule(
    deployments: Sequence[DesiredState],
    nodes: Sequence[NodeView],
    previous: Assignment,
    *,
    local_node: str = LOCAL_NODE,
    retired: Sequence[DesiredState] = (),
    known: Mapping[str, KnownBlob] | None = None,
) -> Schedule:
    """The assignment every node should run, and the plan from `previous` to it.

    Same inputs, same answer, whatever their order. `retired` deployments (being
    deleted) place nothing; they only name the deployment of what the plan removes.
    A cordoned node (`NodeView.cordoned`) gets no new replica; a draining one also
    sees its replicas replaced elsewhere, each kept until its replacement is ready.
    `known` is what the fleet learned of remote sources' blobs: models without a pinned
    hash get the learned one (and its size), and each `load-model` step says what its
    node must fetch. Raises `PlacementError` when the deployments conflict (see
    `check_conflicts`).
    """
    problems = check_conflicts(deployments)
    if problems:
        raise PlacementError("; ".join(problems))
    catalog = build_catalog(deployments, local_node, retired, known)
    fleet = FleetView(nodes)
    added: dict[StepKey, Why] = {}
    removed: dict[StepKey, Why] = {}
    current = previous
    # A pass can free memory after something was refused for lack of it, or leave a
    # model copy that the next pass sees differently: pass again from the result until
    # nothing changes (usually the first or second pass), so that scheduling the result
    # once more is a no-op. What each change is for is told by the pass that made it.
    for _ in range(_MAX_ROUNDS):
        run = Pass(catalog, fleet, current)
        assignment, unplaced = run.result()
        for key, why in run.holdings.added.items():
            added.setdefault(key, why)
        for key, why in run.holdings.removed.items():
            removed.setdefault(key, why)
        if _same(assignment, current):
            break
        current = assignment
    # A node that ran something and now runs nothing is told so.
    for node, before in previous.items():
        if node not in assignment and before.content_key() != EMPTY.content_key():
            assignment[node] = NodeDesired()
    assignment = dict(sorted(assignment.items()))
    retired_names = {d.name for d in retired}
    _explain_removals(catalog, retired_names, previous, assignment, removed)
    steps = plan_diff(previous, assignment, reasons=Reasons(added, removed), owners=catalog.owners)
    steps = with_fetches(steps, assignment, fleet)
    return Schedule(assignment=assignment, plan=Plan(steps=steps, unplaced=unplaced))


def _same(a: Mapping[str, NodeDesired], b: Assignment) -> bool:
    nodes = {*a, *b}
    return all(a.get(n, EMPTY).content_key() == b.get(n, EMPTY).content_key() for n in nodes)


def _explain_removals(
    catalog: Catalog,
    retired: set[str],
    previous: Assignment,
    new: Mapping[str, NodeDesired],
    removed: dict[StepKey, Why],
) -> None:
    """Why things that belong to no current workload leave their nodes."""

    def agent(name: str) -> Why:
        owner = catalog.owners.get(("agent", name), "")
        if owner in retired:
            return Why(owner, f"deployment `{owner}` deleted")
        return Why(owner, "removed from the manifest")

    def model(node: str, alias: str) -> Why:
        owner = catalog.model_owner(node, alias)
        if owner is None:
            return Why("", "removed from the manifest")
        if owner in retired:
            return Why(owner, f"deployment `{owner}` deleted")
        return Why(owner, "no longer needed by any agent")

    for node, before in previous.items():
        after = new.get(node, EMPTY)
        for name in {a.name for a in before.agents} - {a.name for a in after.agents}:
            removed.setdefault((node, "agent", name), agent(name))
        for alias in {m.alias for m in before.models} - {m.alias for m in after.models}:
            removed.setdefault((node, "model", alias), model(node, alias))
