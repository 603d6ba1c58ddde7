"""What one pass holds on each node: models in the memory ledger, agents counted, and why
each thing was put on a node or taken off it."""

from __future__ import annotations

import math

from edgefleet_contract.desired import NodeDesired, NodeLimits
from orchestrator.scheduler.budget import Ledger, budget_of
from orchestrator.scheduler.diff import StepKey, Why
from orchestrator.scheduler.fleet_view import FleetView
from orchestrator.scheduler.model import Assignment
from orchestrator.scheduler.placing import Placing
from orchestrator.scheduler.workloads import Catalog, Workload

EMPTY = NodeDesired()
Score = tuple[bool, bool, bool, bool, float, int, str]
"""How good a node is for a new replica: smallest first, ending with the node id."""


class Holdings:
    """The ledger, agent counts and reasons of one pass."""

    def __init__(self, catalog: Catalog, fleet: FleetView, previous: Assignment) -> None:
        self.fleet = fleet
        self.previous = previous
        nodes = {*catalog.limits, *previous, *fleet.views}
        budgets = {
            node: budget_of(catalog.limits.get(node, NodeLimits()), fleet.memory_total(node))
            for node in nodes
        }
        self.ledger = Ledger(budgets, {a: m.memory_bytes for a, m in catalog.models.items()})
        self.blobs = {a: m.sha256 for a, m in catalog.models.items() if m.sha256}
        """Each model's blob, where known."""
        self.agent_count: dict[str, int] = {}
        self.added: dict[StepKey, Why] = {}
        self.removed: dict[StepKey, Why] = {}

    def try_place(self, p: Placing, node: str, reason: str) -> bool:
        """Place a new replica on the node if its model fits; note why not otherwise."""
        if self.take(p, node, reason):
            p.kept.append(node)
            return True
        p.no_room.add(node)
        return False

    def take(self, p: Placing, node: str, reason: str | None) -> bool:
        """Hold the workload on the node (its model included); `reason` when it is new."""
        w = p.workload
        fresh = not self.ledger.holds(node, w.model)
        if not self.ledger.acquire(node, w.model):
            return False
        before = self.previous.get(node, EMPTY)
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

    def drop(self, p: Placing, node: str, reason: str) -> None:
        """Let go of a node the workload held in this pass."""
        w = p.workload
        self.ledger.release(node, w.model)
        if w.kind == "agent":
            self.agent_count[node] -= 1
        self.forget(p, node, reason)

    def forget(self, p: Placing, node: str, reason: str) -> None:
        """Record why a node that had the workload no longer does."""
        w = p.workload
        self.removed.setdefault((node, w.kind, w.name), Why(w.deployment, reason))

    def score(self, w: Workload, node: str) -> Score:
        """Best node for a new replica first: model ready there, model assigned there,
        its blob held there, its blob held in the node's site, most free memory, fewest
        agents, then node id."""
        free = self.ledger.free(node)
        blob = self.blobs.get(w.model, "")
        return (
            not self.fleet.has_ready_model(node, w.model),
            not self.ledger.holds(node, w.model),
            not self.fleet.holds_blob(node, blob),
            not self.fleet.near_holder(node, blob),
            -math.inf if free is None else -free,
            self.agent_count.get(node, 0),
            node,
        )
