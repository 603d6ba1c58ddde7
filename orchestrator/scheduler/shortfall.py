"""What a workload is short of after a pass, and why, in words an operator acts on."""

from __future__ import annotations

from orchestrator.scheduler.budget import Ledger
from orchestrator.scheduler.fleet_view import SERVING, FleetView
from orchestrator.scheduler.model import Unplaced
from orchestrator.scheduler.placing import Placing
from orchestrator.scheduler.workloads import Workload

NO_ROOM_SHOWN = 3
"""Nodes named in a "no room" explanation; more are counted."""


def unplaced(p: Placing, fleet: FleetView, ledger: Ledger) -> Unplaced | None:
    """The replicas the workload is short of, with every reason; None when none."""
    w = p.workload
    missing = p.replicas - sum(fleet.state(n) in SERVING for n in p.kept)
    if missing <= 0:
        return None
    silent = {n for n in p.kept if fleet.state(n) not in SERVING}
    # Lost nodes explain the slots neither kept nor waiting; the first ones (by id)
    # are those that others stand in for, as in the spread stage.
    lost = sorted({*p.lost, *p.leaving})
    unfilled = max(0, p.unfilled)
    unreplaced = set(lost[len(lost) - unfilled :]) if unfilled else set()
    notes = [state_note(w, n, fleet) for n in sorted(silent | p.waiting | unreplaced)]
    notes += p.notes
    full = sorted(p.no_room)
    notes += [ledger.no_room(n, w.model) for n in full[:NO_ROOM_SHOWN]]
    if len(full) > NO_ROOM_SHOWN:
        notes.append(f"no room on {len(full) - NO_ROOM_SHOWN} more node(s)")
    if not notes or (unreplaced and not p.notes and not full):
        # Nothing else says why no other node took the replicas of the nodes it left.
        notes.append(f"no other ready node of deployment `{w.deployment}` can take it")
    reason = "; ".join(dict.fromkeys(notes))
    return Unplaced(w.kind, w.name, w.deployment, missing, reason)


def state_note(w: Workload, node: str, fleet: FleetView) -> str:
    """Why the node does not serve the workload now."""
    state = fleet.state(node)
    if fleet.cordoned(node) and state in ("ready", "absent"):
        return f"node `{node}` is cordoned (it takes no new work until it is uncordoned)"
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
