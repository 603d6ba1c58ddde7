"""One pass of the scheduler's stages over every workload.

Each workload goes through the same stages, every workload finishing a stage before
any starts the next, so what already runs is served before anything new:

1. sort — the nodes that ran it before: `kept` (still fine there), `leaving` (a failed,
   untrusted or draining node it moves off) or dropped (no longer allowed there);
2. reserve — memory for what stays, in a fixed order, never beyond a node's budget;
3. pin — the manifest's nodes for it, including failback to a pinned node that is back;
   a cordoned pinned node gets nothing new: another node stands in for it;
4. spread — the remaining replicas on the best ready nodes that are not cordoned
   (failover included);
5. settle — what is being replaced stays until its replacement is ready (`handover`),
   a failed node keeps work that could go nowhere else (`placeholder`).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Literal

from edgefleet_contract.desired import NodeDesired, NodeLimits
from orchestrator.scheduler.fleet_view import KEEPS, FleetView
from orchestrator.scheduler.holdings import EMPTY, Holdings, Score
from orchestrator.scheduler.model import Assignment, Unplaced
from orchestrator.scheduler.placing import Placing
from orchestrator.scheduler.shortfall import unplaced
from orchestrator.scheduler.workloads import Catalog, Workload


class Pass:
    """One pass of the stages over every workload."""

    def __init__(self, catalog: Catalog, fleet: FleetView, previous: Assignment) -> None:
        self.catalog = catalog
        self.fleet = fleet
        self.previous = previous
        self.holdings = Holdings(catalog, fleet, previous)
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

    def _placing(self, w: Workload, previous: list[str]) -> Placing:
        allowed = frozenset(w.candidates)
        if w.kind == "model":
            previous = [n for n in previous if n in allowed and self._own_copy(w, n)]
        return Placing(w, allowed, previous)

    def _own_copy(self, w: Workload, node: str) -> bool:
        """Whether the model on the node was there as this workload's replica.

        A copy an agent brought moves with the agent, and one another deployment pins
        stays for that one: neither counts as this workload's replica. A pinned model
        has replicas off its pinned nodes only while another node stands in for one.
        """
        if node in w.pinned:
            return True
        if w.pinned and not any(self.fleet.stood_in_for(w, n) for n in w.pinned):
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
        ledger = self.holdings.ledger
        short = tuple(
            u for p in self.placings if (u := unplaced(p, self.fleet, ledger)) is not None
        )
        return self._assignment(), short

    # -- 1. sort -------------------------------------------------------------------------

    def _sort(self, p: Placing) -> None:
        w, fleet, holdings = p.workload, self.fleet, self.holdings
        stay: list[str] = []
        for node in p.previous:
            state = fleet.state(node)
            if node not in p.allowed:
                where = "the local node" if w.fixed else f"a node of deployment {w.deployment}"
                holdings.forget(p, node, f"{node} is no longer {where}")
            elif self._moved_by_manifest(w, node):
                holdings.forget(p, node, f"the manifest moved it to {', '.join(w.pinned)}")
            elif w.fixed or state in KEEPS or (state == "not-ready" and w.failover != "automatic"):
                # Work on a failed node stays put unless failover is automatic.
                stay.append(node)
            elif fleet.fails_over(w, node):
                p.leaving.append(node)
            else:
                # Untrusted, and nothing moves: the node gets nothing, no other node either.
                holdings.forget(p, node, "node is untrusted")
                p.waiting.add(node)
        stay.sort(key=lambda n: fleet.keep_order(w, n))
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
                holdings.forget(p, node, reason)

    # -- 2. reserve ----------------------------------------------------------------------

    def _reserve(self, p: Placing, bucket: Literal["kept", "handover", "leaving"]) -> None:
        nodes: list[str] = getattr(p, bucket)
        ledger = self.holdings.ledger
        for node in list(nodes):
            if not self.holdings.take(p, node, None):
                nodes.remove(node)
                p.no_room.add(node)
                note = ledger.no_room(node, p.workload.model)
                self.holdings.forget(p, node, f"no room any more ({note})")

    # -- 3. pin --------------------------------------------------------------------------

    def _pin(self, p: Placing) -> None:
        w, fleet, holdings = p.workload, self.fleet, self.holdings
        if w.fixed:
            for node in w.pinned:
                if node in p.kept:
                    continue
                if fleet.cordoned(node):
                    p.waiting.add(node)  # nowhere else to go: it waits for the uncordon
                else:
                    holdings.try_place(p, node, "single-device deployment (runs on the local node)")
            return
        need = max(p.replicas - len(p.kept), 0)
        ready: list[str] = []
        absent: list[str] = []
        for node in w.pinned:
            if node in p.kept or node in p.handover or node in p.leaving:
                continue
            state = fleet.state(node)
            if fleet.stood_in_for(w, node):
                p.lost.append(node)
            elif state == "ready":
                ready.append(node)
            elif state == "absent":
                absent.append(node)  # gets its pinned work when it joins; no failover for it
            else:
                p.waiting.add(node)  # suspect, or failed without automatic failover
        displaced = [n for n in p.kept if n not in w.pinned] if w.failback and w.pinned else []
        wanted = need + len(displaced)
        placed = 0
        for node in sorted(ready, key=lambda n: holdings.score(w, n)) + absent:
            if placed == wanted:
                break
            reason = "pinned by the manifest" if placed < need else f"failback to {node}"
            if holdings.try_place(p, node, reason):
                placed += 1
            elif placed < need:
                p.full_pins += 1
        while len(p.kept) > p.replicas and displaced:
            worst = max(displaced, key=lambda n: fleet.keep_order(w, n))
            displaced.remove(worst)
            p.kept.remove(worst)
            p.handover.append(worst)

    # -- 4. spread -----------------------------------------------------------------------

    def _spread(self, p: Placing) -> None:
        w, fleet, holdings = p.workload, self.fleet, self.holdings
        need = p.unfilled
        if w.fixed or need <= 0:
            return
        taken = {*p.kept, *p.handover, *p.leaving}
        fitting: list[Score] = []
        refused: list[str] = []
        for node in w.candidates:
            if node not in taken and fleet.open_to_new(node):
                if holdings.ledger.fits(node, w.model):
                    fitting.append(holdings.score(w, node))
                else:
                    refused.append(node)
        lost = sorted(
            {*p.lost, *p.leaving, *(n for n in p.handover if fleet.state(n) == "draining")}
        )
        # The score ends with the node id, so it orders the nodes on its own.
        best = [score[-1] for score in heapq.nsmallest(need, fitting)]
        for i, node in enumerate(best):
            if i < len(lost):
                p.replaced[lost[i]] = node
                reason = self._stand_in_reason(w, lost[i])
            elif w.kind == "model" and not w.pinned:
                reason = "used by no agent: one replica on the best node"
            else:
                reason = f"replica {len(p.kept) + 1} of {p.replicas}"
            holdings.take(p, node, reason)
            p.kept.append(node)
        if len(best) < need:
            p.no_room.update(refused)
            if len(w.candidates) < p.replicas:
                p.notes.append(
                    f"deployment `{w.deployment}` has {len(w.candidates)} node(s) for "
                    f"{p.replicas} replicas (one replica per node)"
                )

    def _stand_in_reason(self, w: Workload, node: str) -> str:
        state = self.fleet.state(node)
        if state == "draining":
            return f"moved off {node} (draining)"
        if self.fleet.fails_over(w, node):
            return f"failover from {node} ({state})"
        return f"stands in for {node} (cordoned)"

    # -- 5. settle -----------------------------------------------------------------------

    def _settle(self, p: Placing) -> None:
        w, fleet, holdings = p.workload, self.fleet, self.holdings
        short = p.unfilled
        for node in p.leaving:
            state = fleet.state(node)
            if state == "draining":
                p.handover.append(node)
            elif state == "not-ready" and short > 0:
                # Nothing could replace it: it resumes when the node is back.
                p.placeholders.append(node)
                short -= 1
            else:
                target = p.replaced.get(node)
                why = f"failover to {target} (node is {state})" if target else f"node is {state}"
                holdings.drop(p, node, why)
        p.handover.sort(key=lambda n: fleet.keep_order(w, n))
        keep = max(0, p.replicas - self._ready_count(p))
        for node in p.handover[keep:]:
            if fleet.state(node) == "draining":
                target = p.replaced.get(node) or ", ".join(self._serving(p)) or "another node"
                reason = f"moved to {target} (node is draining)"
            else:
                reason = f"failed back to {', '.join(_pinned_in(w, p.kept))}"
            holdings.drop(p, node, reason)
        p.handover = p.handover[:keep]

    # -- the assignment ------------------------------------------------------------------

    def _assignment(self) -> dict[str, NodeDesired]:
        agents: dict[str, list[str]] = {}
        for p in self.placings:
            if p.workload.kind == "agent":
                for node in {*p.kept, *p.handover, *p.placeholders}:
                    agents.setdefault(node, []).append(p.workload.name)
        ledger = self.holdings.ledger
        nodes = {*self.catalog.limits, *agents}
        nodes |= {n for n in ledger.nodes() if ledger.models_on(n)}
        return {
            node: NodeDesired(
                models=tuple(self.catalog.models[a] for a in ledger.models_on(node)),
                agents=tuple(self.catalog.agents[a] for a in sorted(agents.get(node, []))),
                limits=self.catalog.limits.get(node, NodeLimits()),
            )
            for node in sorted(nodes)
        }

    # -- rules ---------------------------------------------------------------------------

    def _moved_by_manifest(self, w: Workload, node: str) -> bool:
        """Whether an agent's replica off its pinned nodes runs another model than the
        manifest now gives it there: the manifest moved it (it is no stand-in for a pinned
        node), and keeping it would load a model on that node for nothing."""
        if w.kind != "agent" or not w.pinned or node in w.pinned:
            return False
        if any(self.fleet.stood_in_for(w, n) for n in w.pinned):
            return False
        before = self.previous.get(node, EMPTY)
        return any(a.name == w.name and a.model != w.model for a in before.agents)

    def _serving(self, p: Placing) -> list[str]:
        """The workload's nodes that report it ready."""
        return [n for n in p.kept if self.fleet.reports_ready(n, p.workload)]

    def _ready_count(self, p: Placing) -> int:
        return len(self._serving(p))


def _pinned_in(w: Workload, nodes: Sequence[str]) -> list[str]:
    return [n for n in nodes if n in w.pinned] or list(nodes)
