"""Where every agent and model runs: a pure function of desired state, nodes and the last
assignment.

Each workload goes through the same stages, every workload finishing a stage before
any starts the next, so what already runs is served before anything new:

1. sort — the nodes that ran it before: `kept` (still fine there), `leaving` (a failed,
   untrusted or draining node it moves off) or dropped (no longer allowed there);
2. reserve — memory for what stays, in a fixed order, never beyond a node's budget;
3. pin — the manifest's nodes for it, including failback to a pinned node that is back;
4. spread — the remaining replicas on the best ready nodes (failover included);
5. settle — what is being replaced stays until its replacement is ready (`handover`),
   a failed node keeps work that could go nowhere else (`placeholder`).

The new assignment is what all workloads hold; `diff` turns it into the plan.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from node_agent.desired import NodeDesired, NodeLimits
from orchestrator.errors import PlacementError
from orchestrator.manifest.desired import LOCAL_NODE, DesiredState
from orchestrator.scheduler.budget import Ledger, budget_of
from orchestrator.scheduler.conflicts import check_conflicts
from orchestrator.scheduler.diff import Reasons, StepKey, Why, plan_diff
from orchestrator.scheduler.model import (
    Assignment,
    NodeState,
    NodeView,
    Plan,
    Schedule,
    Unplaced,
)
from orchestrator.scheduler.workloads import Catalog, Workload, build_catalog

Status = NodeState | Literal["absent"]
"""A node's state, or `absent`: named somewhere but never connected."""

_RANK: dict[Status, int] = {
    "ready": 0,
    "suspect": 1,
    "absent": 2,
    "not-ready": 3,
    "draining": 4,
    "untrusted": 5,
}
_SERVING: frozenset[Status] = frozenset({"ready", "suspect"})
_KEEPS: frozenset[Status] = frozenset({"ready", "suspect", "absent"})
_MAX_ROUNDS = 4
_NO_ROOM_SHOWN = 3


def schedule(
    deployments: Sequence[DesiredState],
    nodes: Sequence[NodeView],
    previous: Assignment,
    *,
    local_node: str = LOCAL_NODE,
    retired: Sequence[DesiredState] = (),
) -> Schedule:
    """The assignment every node should run, and the plan from `previous` to it.

    Same inputs, same answer, whatever their order. `retired` deployments (being
    deleted) place nothing; they only name the deployment of what the plan removes.
    Raises `PlacementError` when the deployments conflict (see `check_conflicts`).
    """
    problems = check_conflicts(deployments)
    if problems:
        raise PlacementError("; ".join(problems))
    catalog = build_catalog(deployments, local_node, retired)
    fleet = _Fleet(nodes)
    added: dict[StepKey, Why] = {}
    removed: dict[StepKey, Why] = {}
    current = previous
    # A pass can free memory after something was refused for lack of it, or leave a
    # model copy that the next pass sees differently: pass again from the result until
    # nothing changes (usually the first or second pass), so that scheduling the result
    # once more is a no-op. What each change is for is told by the pass that made it.
    for _ in range(_MAX_ROUNDS):
        run = _Run(catalog, fleet, current)
        assignment, unplaced = run.result()
        for key, why in run.added.items():
            added.setdefault(key, why)
        for key, why in run.removed.items():
            removed.setdefault(key, why)
        if _same(assignment, current):
            break
        current = assignment
    # A node that ran something and now runs nothing is told so.
    for node, before in previous.items():
        if node not in assignment and _content(before) != _content(_EMPTY):
            assignment[node] = NodeDesired()
    assignment = dict(sorted(assignment.items()))
    retired_names = {d.name for d in retired}
    _explain_removals(catalog, retired_names, previous, assignment, removed)
    steps = plan_diff(previous, assignment, reasons=Reasons(added, removed), owners=catalog.owners)
    return Schedule(assignment=assignment, plan=Plan(steps=steps, unplaced=unplaced))


class _Fleet:
    """The nodes as reported, by id."""

    def __init__(self, nodes: Sequence[NodeView]) -> None:
        self.views: dict[str, NodeView] = {}
        for view in nodes:
            if view.id in self.views:
                raise ValueError(f"node `{view.id}` appears twice in the node list")
            self.views[view.id] = view

    def state(self, node: str) -> Status:
        view = self.views.get(node)
        return view.state if view is not None else "absent"

    def memory_total(self, node: str) -> int:
        view = self.views.get(node)
        return view.memory_total_bytes if view is not None else 0

    def has_ready_model(self, node: str, alias: str) -> bool:
        view = self.views.get(node)
        return view is not None and alias in view.ready_models

    def reports_ready(self, node: str, workload: Workload) -> bool:
        view = self.views.get(node)
        if view is None:
            return False
        ready = view.ready_agents if workload.kind == "agent" else view.ready_models
        return workload.name in ready


@dataclass
class _Placing:
    """One workload's placements while the schedule is computed."""

    workload: Workload
    allowed: frozenset[str]
    previous: list[str]
    kept: list[str] = field(default_factory=list)
    """Nodes running a counted replica (or meant to)."""
    leaving: list[str] = field(default_factory=list)
    """Nodes it moves off: replaced where possible."""
    handover: list[str] = field(default_factory=list)
    """Nodes being replaced that keep it until the replacements report ready."""
    placeholders: list[str] = field(default_factory=list)
    """Failed nodes that keep it because no other node could take it."""
    waiting: set[str] = field(default_factory=set)
    """Nodes expected back: their replicas are not placed elsewhere."""
    lost: list[str] = field(default_factory=list)
    """Pinned nodes that cannot have it now; other nodes stand in."""
    replaced: dict[str, str] = field(default_factory=dict)
    """Lost or leaving node -> the node that stands in for it."""
    no_room: set[str] = field(default_factory=set)
    """Nodes refused for lack of memory (told with the final numbers)."""
    full_pins: int = 0
    """Pinned nodes that are up but have no room: their replicas are not placed elsewhere."""
    notes: list[str] = field(default_factory=list)

    @property
    def replicas(self) -> int:
        return self.workload.replicas


class _Run:
    """One pass of the stages over every workload."""

    def __init__(self, catalog: Catalog, fleet: _Fleet, previous: Assignment) -> None:
        self.catalog = catalog
        self.fleet = fleet
        self.previous = previous
        nodes = {*catalog.limits, *previous, *fleet.views}
        budgets = {
            node: budget_of(catalog.limits.get(node, NodeLimits()), fleet.memory_total(node))
            for node in nodes
        }
        self.ledger = Ledger(budgets, {a: m.memory_bytes for a, m in catalog.models.items()})
        self.agent_count: dict[str, int] = {}
        self.added: dict[StepKey, Why] = {}
        self.removed: dict[StepKey, Why] = {}
        hosts: dict[tuple[str, str], list[str]] = {}
        for node in sorted(previous):
            for model in previous[node].models:
                hosts.setdefault(("model", model.alias), []).append(node)
            for agent in previous[node].agents:
                hosts.setdefault(("agent", agent.name), []).append(node)
        # Which deployments pin each model to each node.
        self.pins: dict[tuple[str, str], set[str]] = {}
        for w in catalog.workloads:
            if w.kind == "model":
                for node in w.pinned:
                    self.pins.setdefault((node, w.name), set()).add(w.deployment)
        self.placings = [
            self._placing(w, hosts.get((w.kind, w.name), [])) for w in catalog.workloads
        ]

    def _placing(self, w: Workload, previous: list[str]) -> _Placing:
        allowed = frozenset(w.candidates)
        if w.kind == "model":
            previous = [n for n in previous if n in allowed and self._own_copy(w, n)]
        return _Placing(w, allowed, previous)

    def _own_copy(self, w: Workload, node: str) -> bool:
        """Whether the model on the node was there as this workload's replica.

        A copy an agent brought moves with the agent, and one another deployment pins
        stays for that one: neither counts as this workload's replica. A pinned model
        has replicas off its pinned nodes only while one of those has failed over.
        """
        if node in w.pinned:
            return True
        if w.pinned and not any(self._fails_over(w, n) for n in w.pinned):
            return False
        if any(a.model == w.name for a in self.previous[node].agents):
            return False
        return not self.pins.get((node, w.name), set()) - {w.deployment}

    def result(self) -> tuple[dict[str, NodeDesired], tuple[Unplaced, ...]]:
        """Run every stage; the new assignment and what is short of its replicas."""
        for p in self.placings:
            self._sort(p)
        for bucket in ("kept", "handover", "leaving"):
            for p in self.placings:
                self._reserve(p, bucket)
        for p in self.placings:
            self._pin(p)
        for p in self.placings:
            self._spread(p)
        for p in self.placings:
            self._settle(p)
        unplaced = tuple(u for p in self.placings if (u := self._unplaced(p)) is not None)
        return self._assignment(), unplaced

    # -- 1. sort -------------------------------------------------------------------------

    def _sort(self, p: _Placing) -> None:
        w = p.workload
        stay: list[str] = []
        for node in p.previous:
            state = self.fleet.state(node)
            if node not in p.allowed:
                where = "the local node" if w.fixed else f"a node of deployment {w.deployment}"
                self._forget(p, node, f"{node} is no longer {where}")
            elif self._moved_by_manifest(w, node):
                self._forget(p, node, f"the manifest moved it to {', '.join(w.pinned)}")
            elif w.fixed or state in _KEEPS or (state == "not-ready" and w.failover != "automatic"):
                # Work on a failed node stays put unless failover is automatic.
                stay.append(node)
            elif self._fails_over(w, node):
                p.leaving.append(node)
            else:
                # Untrusted, and nothing moves: the node gets nothing, no other node either.
                self._forget(p, node, "node is untrusted")
                p.waiting.add(node)
        stay.sort(key=lambda n: self._keep_order(w, n))
        p.kept = stay[: p.replicas]
        surplus = stay[p.replicas :]
        # A replica off its pinned nodes beyond the count was displaced by failback: it
        # stays only until the pinned replicas report ready, so service has no gap.
        displaced = [n for n in surplus if w.failback and w.pinned and n not in w.pinned]
        keep = max(0, p.replicas - self._ready_count(p))
        p.handover = displaced[:keep]
        for node in surplus:
            if node not in p.handover:
                reason = (
                    f"failed back to {', '.join(_pinned_in(w, p.kept))}"
                    if node in displaced
                    else f"replicas lowered to {p.replicas}"
                )
                self._forget(p, node, reason)

    # -- 2. reserve ----------------------------------------------------------------------

    def _reserve(self, p: _Placing, bucket: Literal["kept", "handover", "leaving"]) -> None:
        nodes: list[str] = getattr(p, bucket)
        for node in list(nodes):
            if not self._take(p, node, None):
                nodes.remove(node)
                p.no_room.add(node)
                note = self.ledger.no_room(node, p.workload.model)
                self._forget(p, node, f"no room any more ({note})")

    # -- 3. pin --------------------------------------------------------------------------

    def _pin(self, p: _Placing) -> None:
        w = p.workload
        if w.fixed:
            for node in w.pinned:
                if node not in p.kept:
                    self._try(p, node, "single-device deployment (runs on the local node)")
            return
        need = max(p.replicas - len(p.kept), 0)
        ready: list[str] = []
        absent: list[str] = []
        for node in w.pinned:
            if node in p.kept or node in p.handover or node in p.leaving:
                continue
            state = self.fleet.state(node)
            if state == "ready":
                ready.append(node)
            elif state == "absent":
                absent.append(node)  # gets its pinned work when it joins; no failover for it
            elif self._fails_over(w, node):
                p.lost.append(node)
            else:
                p.waiting.add(node)  # suspect, or failed without automatic failover
        displaced = [n for n in p.kept if n not in w.pinned] if w.failback and w.pinned else []
        wanted = need + len(displaced)
        placed = 0
        for node in sorted(ready, key=lambda n: self._score(w, n)) + absent:
            if placed == wanted:
                break
            reason = "pinned by the manifest" if placed < need else f"failback to {node}"
            if self._try(p, node, reason):
                placed += 1
            elif placed < need:
                p.full_pins += 1
        while len(p.kept) > p.replicas and displaced:
            worst = max(displaced, key=lambda n: self._keep_order(w, n))
            displaced.remove(worst)
            p.kept.remove(worst)
            p.handover.append(worst)

    # -- 4. spread -----------------------------------------------------------------------

    def _spread(self, p: _Placing) -> None:
        w = p.workload
        need = self._unfilled(p)
        if w.fixed or need <= 0:
            return
        taken = {*p.kept, *p.handover, *p.leaving}
        fitting: list[tuple[bool, bool, float, int, str]] = []
        refused: list[str] = []
        for node in w.candidates:
            if node not in taken and self.fleet.state(node) == "ready":
                if self.ledger.fits(node, w.model):
                    fitting.append(self._score(w, node))
                else:
                    refused.append(node)
        lost = sorted(
            {*p.lost, *p.leaving, *(n for n in p.handover if self.fleet.state(n) == "draining")}
        )
        # The score ends with the node id, so it orders the nodes on its own.
        best = [score[-1] for score in heapq.nsmallest(need, fitting)]
        for i, node in enumerate(best):
            if i < len(lost):
                p.replaced[lost[i]] = node
                state = self.fleet.state(lost[i])
                verb = "moved off" if state == "draining" else "failover from"
                reason = f"{verb} {lost[i]} ({state})"
            elif w.kind == "model" and not w.pinned:
                reason = "used by no agent: one replica on the best node"
            else:
                reason = f"replica {len(p.kept) + 1} of {p.replicas}"
            self._take(p, node, reason)
            p.kept.append(node)
        if len(best) < need:
            p.no_room.update(refused)
            if len(w.candidates) < p.replicas:
                p.notes.append(
                    f"deployment `{w.deployment}` has {len(w.candidates)} node(s) for "
                    f"{p.replicas} replicas (one replica per node)"
                )

    # -- 5. settle -----------------------------------------------------------------------

    def _settle(self, p: _Placing) -> None:
        w = p.workload
        short = self._unfilled(p)
        for node in p.leaving:
            state = self.fleet.state(node)
            if state == "draining":
                p.handover.append(node)
            elif state == "not-ready" and short > 0:
                # Nothing could replace it: it resumes when the node is back.
                p.placeholders.append(node)
                short -= 1
            else:
                target = p.replaced.get(node)
                why = f"failover to {target} (node is {state})" if target else f"node is {state}"
                self._drop(p, node, why)
        p.handover.sort(key=lambda n: self._keep_order(w, n))
        keep = max(0, p.replicas - self._ready_count(p))
        for node in p.handover[keep:]:
            if self.fleet.state(node) == "draining":
                target = p.replaced.get(node) or ", ".join(self._serving(p)) or "another node"
                reason = f"moved to {target} (node is draining)"
            else:
                reason = f"failed back to {', '.join(_pinned_in(w, p.kept))}"
            self._drop(p, node, reason)
        p.handover = p.handover[:keep]

    # -- what is short -------------------------------------------------------------------

    def _unplaced(self, p: _Placing) -> Unplaced | None:
        w = p.workload
        missing = p.replicas - sum(self.fleet.state(n) in _SERVING for n in p.kept)
        if missing <= 0:
            return None
        silent = {n for n in p.kept if self.fleet.state(n) not in _SERVING}
        # Lost nodes explain the slots neither kept nor waiting; the first ones (by id)
        # are those that others stand in for, as in `_spread`.
        lost = sorted({*p.lost, *p.leaving})
        unfilled = max(0, self._unfilled(p))
        unreplaced = set(lost[len(lost) - unfilled :]) if unfilled else set()
        notes = [self._state_note(w, n) for n in sorted(silent | p.waiting | unreplaced)]
        notes += p.notes
        full = sorted(p.no_room)
        notes += [self.ledger.no_room(n, w.model) for n in full[:_NO_ROOM_SHOWN]]
        if len(full) > _NO_ROOM_SHOWN:
            notes.append(f"no room on {len(full) - _NO_ROOM_SHOWN} more node(s)")
        reason = "; ".join(dict.fromkeys(notes)) or (
            f"no other ready node of deployment `{w.deployment}` can take it"
        )
        return Unplaced(w.kind, w.name, w.deployment, missing, reason)

    def _state_note(self, w: Workload, node: str) -> str:
        state = self.fleet.state(node)
        if state == "absent":
            if w.fixed:
                return (
                    f"waiting for the local node `{node}` to connect "
                    f"(start it with `edge-node run --id {node}`)"
                )
            return f"node `{node}` has not connected yet"
        if state == "suspect":
            return f"node `{node}` is suspect (no new work until it recovers or times out)"
        if state == "untrusted":
            return f"node `{node}` is untrusted (it has not proved it belongs to the cluster)"
        if state == "not-ready" and not w.fixed and w.failover != "automatic":
            return f"node `{node}` is not-ready (failover: {w.failover}, so nothing moves)"
        return f"node `{node}` is {state}"

    # -- the assignment ------------------------------------------------------------------

    def _assignment(self) -> dict[str, NodeDesired]:
        agents: dict[str, list[str]] = {}
        for p in self.placings:
            if p.workload.kind == "agent":
                for node in {*p.kept, *p.handover, *p.placeholders}:
                    agents.setdefault(node, []).append(p.workload.name)
        nodes = {*self.catalog.limits, *agents}
        nodes |= {n for n in self.ledger.nodes() if self.ledger.models_on(n)}
        return {
            node: NodeDesired(
                models=tuple(self.catalog.models[a] for a in self.ledger.models_on(node)),
                agents=tuple(self.catalog.agents[a] for a in sorted(agents.get(node, []))),
                limits=self.catalog.limits.get(node, NodeLimits()),
            )
            for node in sorted(nodes)
        }

    # -- holding and letting go ----------------------------------------------------------

    def _try(self, p: _Placing, node: str, reason: str) -> bool:
        """Place a new replica on the node if its model fits; note why not otherwise."""
        if self._take(p, node, reason):
            p.kept.append(node)
            return True
        p.no_room.add(node)
        return False

    def _take(self, p: _Placing, node: str, reason: str | None) -> bool:
        """Hold the workload on the node (its model included); `reason` when it is new."""
        w = p.workload
        fresh = not self.ledger.holds(node, w.model)
        if not self.ledger.acquire(node, w.model):
            return False
        before = self.previous.get(node, _EMPTY)
        if fresh and all(m.alias != w.model for m in before.models):
            why = reason or "its model changed"
            if w.kind == "agent":
                why = f"needed by agent `{w.name}` ({why})"
            self.added.setdefault((node, "model", w.model), Why(w.deployment, why))
        if w.kind == "agent":
            self.agent_count[node] = self.agent_count.get(node, 0) + 1
            if reason is not None:
                self.added.setdefault((node, "agent", w.name), Why(w.deployment, reason))
        return True

    def _drop(self, p: _Placing, node: str, reason: str) -> None:
        """Let go of a node the workload held in this pass."""
        w = p.workload
        self.ledger.release(node, w.model)
        if w.kind == "agent":
            self.agent_count[node] -= 1
        self._forget(p, node, reason)

    def _forget(self, p: _Placing, node: str, reason: str) -> None:
        """Record why a node that had the workload no longer does."""
        w = p.workload
        self.removed.setdefault((node, w.kind, w.name), Why(w.deployment, reason))

    # -- orderings -----------------------------------------------------------------------

    def _keep_order(self, w: Workload, node: str) -> tuple[bool, bool, int, str]:
        """Which of a workload's nodes keep it first: pinned, ready there, healthiest."""
        return (
            node not in w.pinned,
            not self.fleet.reports_ready(node, w),
            _RANK[self.fleet.state(node)],
            node,
        )

    def _score(self, w: Workload, node: str) -> tuple[bool, bool, float, int, str]:
        """Best node for a new replica first: model ready there, model assigned there,
        most free memory, fewest agents, then node id."""
        free = self.ledger.free(node)
        return (
            not self.fleet.has_ready_model(node, w.model),
            not self.ledger.holds(node, w.model),
            -math.inf if free is None else -free,
            self.agent_count.get(node, 0),
            node,
        )

    def _moved_by_manifest(self, w: Workload, node: str) -> bool:
        """Whether an agent's replica off its pinned nodes runs another model than the
        manifest now gives it there: the manifest moved it (it is no stand-in for a failed
        pinned node), and keeping it would load a model on that node for nothing."""
        if w.kind != "agent" or not w.pinned or node in w.pinned:
            return False
        if any(self._fails_over(w, n) for n in w.pinned):
            return False
        before = self.previous.get(node, _EMPTY)
        return any(a.name == w.name and a.model != w.model for a in before.agents)

    def _fails_over(self, w: Workload, node: str) -> bool:
        """Whether the workload's replica on this node moves elsewhere."""
        state = self.fleet.state(node)
        return state == "draining" or (
            state in ("not-ready", "untrusted") and w.failover == "automatic"
        )

    def _unfilled(self, p: _Placing) -> int:
        """Replicas neither placed nor left to nodes expected back or pinned but full."""
        return p.replicas - len(p.kept) - len(p.waiting) - p.full_pins

    def _serving(self, p: _Placing) -> list[str]:
        """The workload's nodes that report it ready."""
        return [n for n in p.kept if self.fleet.reports_ready(n, p.workload)]

    def _ready_count(self, p: _Placing) -> int:
        return len(self._serving(p))


_EMPTY = NodeDesired()


def _content(desired: NodeDesired) -> tuple[object, ...]:
    return (desired.models, desired.agents, desired.limits)


def _same(a: Mapping[str, NodeDesired], b: Assignment) -> bool:
    nodes = {*a, *b}
    return all(_content(a.get(n, _EMPTY)) == _content(b.get(n, _EMPTY)) for n in nodes)


def _pinned_in(w: Workload, nodes: Sequence[str]) -> list[str]:
    return [n for n in nodes if n in w.pinned] or list(nodes)


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
        after = new.get(node, _EMPTY)
        for name in {a.name for a in before.agents} - {a.name for a in after.agents}:
            removed.setdefault((node, "agent", name), agent(name))
        for alias in {m.alias for m in before.models} - {m.alias for m in after.models}:
            removed.setdefault((node, "model", alias), model(node, alias))
