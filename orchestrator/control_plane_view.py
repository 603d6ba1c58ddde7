"""The control plane as `edgectl status` shows it: who leads, in which term, and whether
the store takes writes."""

from __future__ import annotations

from edgefleet.v1 import controller_pb2
from orchestrator.control_role import ControlRole
from orchestrator.leadership import Leadership
from orchestrator.store import StateStore

MEMBER_SEEN_S = 15.0
"""A controller not heard from for this long is left out of the list (three heartbeats)."""


def single_control_plane(store: StateStore) -> controller_pb2.ControlPlane:
    """One controller, no election: it decides alone; the store says whether it is writable."""
    health = store.health()
    return controller_pb2.ControlPlane(
        role="single",
        leader_id=store.controller_id,
        store_kind=health.kind,
        writable=health.writable,
        store_detail=health.detail,
    )


def control_plane_status(
    leadership: Leadership | None, role: ControlRole | None, store: StateStore
) -> controller_pb2.ControlPlane:
    """This controller's role, the leader it knows (listed in `controllers`) and the store's
    health. The term is this controller's while it leads, else the last one taken."""
    health = store.health()
    plane = controller_pb2.ControlPlane(
        store_kind=health.kind, writable=health.writable, store_detail=health.detail
    )
    if leadership is None:  # starting: nothing decided yet
        plane.role = "standby"
        return plane
    view = leadership.view()
    plane.role = view.role
    plane.leader_id, plane.leader_address = view.leader_id, view.leader_address
    plane.term = role.acting_term if role is not None and role.acting_term else store.current_term()
    for member in store.members(within_s=MEMBER_SEEN_S):
        plane.controllers.append(
            controller_pb2.ControllerMember(
                controller_id=member.controller_id, address=member.address, role=member.role
            )
        )
    if view.leader_id and all(m.controller_id != view.leader_id for m in plane.controllers):
        plane.controllers.append(
            controller_pb2.ControllerMember(
                controller_id=view.leader_id, address=view.leader_address, role="leader"
            )
        )
    return plane
