"""The controller API's node maintenance calls: cordon, drain, uncordon, drain progress.

A mark is the operator's word about a node, kept across restarts (see
`Fleet.mark`); the scheduler reads it on every pass, so a call here only marks
the node (the fleet asks the reconciler for a pass) and records the event. Health
keeps its own say: a draining node that fails is `not-ready` and its failover
rules apply (see `health.node_state`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import grpc

from edgefleet.v1 import common_pb2, controller_pb2
from edgefleet_common.grpc_errors import Ctx, StatusError
from edgefleet_contract.desired import NodeDesired
from orchestrator.api_errors import unary
from orchestrator.drain_progress import DrainInputs, drain_progress, hosts
from orchestrator.events import EventLog
from orchestrator.fleet.fleet import Fleet
from orchestrator.manifest.desired import DesiredState
from orchestrator.reconciler import Reconciler
from orchestrator.scheduler.model import Plan
from orchestrator.store import Mark
from orchestrator.views import node_view, unconnected_node_view

log = logging.getLogger(__name__)

MAX_NODE_ID = 63
MAX_REASON = 200
KNOWN_SHOWN = 20
"""Node ids listed when a request names an unknown one."""

_MARKED = {
    "cordoned": ("NodeCordoned", "cordoned: no new work goes there; what runs there stays"),
    "draining": (
        "NodeDraining",
        "draining: its agents and models move to other nodes, each replacement ready "
        "before the replica it replaces stops",
    ),
}


class Maintenance:
    """Answers CordonNode, DrainNode, UncordonNode and GetDrainProgress."""

    def __init__(
        self,
        fleet: Fleet,
        events: EventLog,
        *,
        assignment: Callable[[], Mapping[str, NodeDesired]],
        deployments: Callable[[], Sequence[DesiredState]],
        plan: Callable[[], Plan | None],
    ) -> None:
        """`assignment`, `deployments` and `plan` give the reconciler's latest."""
        self._fleet = fleet
        self._events = events
        self._assignment = assignment
        self._deployments = deployments
        self._plan = plan
        self._hosts_at_drain: dict[str, dict[tuple[str, str], frozenset[str]]] = {}
        """Per draining node, where its items also ran when the drain began (to tell the
        nodes that took them over); lost on restart, when every other node is shown."""

    @classmethod
    def of(cls, fleet: Fleet, events: EventLog, reconciler: Reconciler) -> Maintenance:
        """Maintenance of the fleet that `reconciler` schedules."""
        return cls(
            fleet,
            events,
            assignment=lambda: reconciler.assignment,
            deployments=lambda: reconciler.deployments(),
            plan=lambda: reconciler.last_schedule.plan if reconciler.last_schedule else None,
        )

    def cordon(
        self, request: controller_pb2.NodeMaintenanceRequest
    ) -> controller_pb2.NodeMaintenanceResponse:
        """Mark the node cordoned; nothing changes if it is cordoned or draining already."""
        return self._mark(request, "cordoned")

    def drain(
        self, request: controller_pb2.NodeMaintenanceRequest
    ) -> controller_pb2.NodeMaintenanceResponse:
        """Mark the node draining (a cordoned one too); nothing changes if it is already."""
        return self._mark(request, "draining")

    def uncordon(
        self, request: controller_pb2.NodeMaintenanceRequest
    ) -> controller_pb2.NodeMaintenanceResponse:
        """Lift the node's mark; nothing changes if it has none."""
        node = self._known(request.node_id)
        _check_reason(request.reason)
        before = self._fleet.marks.get(node)
        changed = self._fleet.unmark(node)
        self._hosts_at_drain.pop(node, None)
        if changed and before is not None:
            self._events.record(
                "info",
                "NodeUncordoned",
                f"node/{node}",
                f"{node} uncordoned (was {before.mark}): it takes new work again"
                + _because(request.reason),
                node_id=node,
            )
        return controller_pb2.NodeMaintenanceResponse(changed=changed, node=self._view(node))

    def progress(
        self, request: controller_pb2.GetDrainProgressRequest
    ) -> controller_pb2.DrainProgress:
        """What the node still runs, where each item moves, and what cannot move."""
        node = self._known(request.node_id)
        link = self._fleet.get(node)
        return drain_progress(
            DrainInputs(
                node_id=node,
                state=self._fleet.state_of(link) if link is not None else None,
                mark=self._fleet.marks.get(node),
                status=link.status if link is not None else None,
                desired=link.desired if link is not None else None,
                assignment=self._assignment(),
                statuses={
                    other.node_id: other.status
                    for other in self._fleet.links()
                    if other.status is not None
                },
                plan=self._plan(),
                deployments=self._deployments(),
                hosts_before=self._hosts_at_drain.get(node),
            )
        )

    # -- helpers -------------------------------------------------------------------------

    def _mark(
        self, request: controller_pb2.NodeMaintenanceRequest, mark: Mark
    ) -> controller_pb2.NodeMaintenanceResponse:
        node = self._known(request.node_id)
        _check_reason(request.reason)
        current = self._fleet.marks.get(node)
        # Draining includes cordoned: cordoning a draining node leaves it draining.
        if current is not None and (current.mark == mark or current.mark == "draining"):
            return controller_pb2.NodeMaintenanceResponse(changed=False, node=self._view(node))
        if mark == "draining":
            self._hosts_at_drain[node] = hosts(self._assignment(), node)
        else:
            self._hosts_at_drain.pop(node, None)
        reason, text = _MARKED[mark]
        # Recorded first: a node empty already is drained as soon as it is marked.
        self._events.record(
            "info",
            reason,
            f"node/{node}",
            f"{node} {text}" + _because(request.reason),
            node_id=node,
        )
        self._fleet.mark(node, mark, request.reason)
        return controller_pb2.NodeMaintenanceResponse(changed=True, node=self._view(node))

    def _known(self, node_id: str) -> str:
        """The node id, if the controller knows the node (NOT_FOUND otherwise)."""
        if not node_id or len(node_id) > MAX_NODE_ID:
            raise StatusError(
                grpc.StatusCode.INVALID_ARGUMENT, f"node_id must be 1-{MAX_NODE_ID} characters"
            )
        known = self._known_nodes()
        if node_id not in known:
            shown = sorted(known)[:KNOWN_SHOWN]
            more = f" and {len(known) - len(shown)} more" if len(known) > len(shown) else ""
            raise StatusError(
                grpc.StatusCode.NOT_FOUND,
                f"no node named `{node_id}`; nodes: {', '.join(shown) or 'none'}{more}",
            )
        return node_id

    def _known_nodes(self) -> set[str]:
        """Connected or discovered nodes, nodes a current deployment names, marked nodes."""
        known = {link.node_id for link in self._fleet.links()}
        known.update(n.id for d in self._deployments() for n in d.nodes)
        known.update(self._fleet.marks.all())
        return known

    def _view(self, node: str) -> controller_pb2.NodeView:
        link = self._fleet.get(node)
        mark = self._fleet.marks.get(node)
        if link is not None:
            return node_view(link, self._assignment().get(node), mark)
        if mark is not None:
            return unconnected_node_view(mark)
        return controller_pb2.NodeView(
            id=node, state=common_pb2.NODE_STATE_NOT_READY, reason="not connected"
        )


def _check_reason(reason: str) -> None:
    if len(reason) > MAX_REASON:
        raise StatusError(
            grpc.StatusCode.INVALID_ARGUMENT, f"reason is longer than {MAX_REASON} characters"
        )


def _because(reason: str) -> str:
    return f" (reason: {reason})" if reason else ""


class MaintenanceCalls:
    """The node maintenance RPCs of ControllerService (one of its bases)."""

    _maintenance: Maintenance

    @unary
    async def CordonNode(
        self, request: controller_pb2.NodeMaintenanceRequest, context: Ctx
    ) -> controller_pb2.NodeMaintenanceResponse:
        return self._maintenance.cordon(request)

    @unary
    async def DrainNode(
        self, request: controller_pb2.NodeMaintenanceRequest, context: Ctx
    ) -> controller_pb2.NodeMaintenanceResponse:
        return self._maintenance.drain(request)

    @unary
    async def UncordonNode(
        self, request: controller_pb2.NodeMaintenanceRequest, context: Ctx
    ) -> controller_pb2.NodeMaintenanceResponse:
        return self._maintenance.uncordon(request)

    @unary
    async def GetDrainProgress(
        self, request: controller_pb2.GetDrainProgressRequest, context: Ctx
    ) -> controller_pb2.DrainProgress:
        return self._maintenance.progress(request)
