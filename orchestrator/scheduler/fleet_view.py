"""The nodes as one schedule reads them: state, cordon, memory, what each reports ready
and which model blobs each holds.

The rules that depend on a node alone live here: whether a workload's replica there
moves elsewhere, whether the node takes new replicas, and which of a workload's
nodes keep it first.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.scheduler.model import NodeView, Status
from orchestrator.scheduler.workloads import Workload

RANK: dict[Status, int] = {
    "ready": 0,
    "suspect": 1,
    "absent": 2,
    "not-ready": 3,
    "draining": 4,
    "untrusted": 5,
}
"""Healthiest first: which of a workload's nodes keep it when there are too many."""
SERVING: frozenset[Status] = frozenset({"ready", "suspect"})
"""States whose replicas count as serving."""
KEEPS: frozenset[Status] = frozenset({"ready", "suspect", "absent"})
"""States whose replicas stay where they are, whatever the failover mode."""
SITE_LABEL = "site"
"""The node label that names where a node is: nodes of one site share a LAN."""


class FleetView:
    """The nodes as reported, by id; a node not in the list is `absent`."""

    def __init__(self, nodes: Sequence[NodeView]) -> None:
        self.views: dict[str, NodeView] = {}
        for view in nodes:
            if view.id in self.views:
                raise ValueError(f"node `{view.id}` appears twice in the node list")
            self.views[view.id] = view
        self._holders: dict[str, dict[str, list[str]]] = {}
        """Blob -> site -> the nodes there that hold it whole."""
        for view in self.views.values():
            for blob in view.blobs:
                sites = self._holders.setdefault(blob, {})
                sites.setdefault(view.labels.get(SITE_LABEL, ""), []).append(view.id)

    def state(self, node: str) -> Status:
        """The node's state (`absent` when not reported)."""
        view = self.views.get(node)
        return view.state if view is not None else "absent"

    def cordoned(self, node: str) -> bool:
        """Whether the node takes no new replica (cordoned or draining)."""
        view = self.views.get(node)
        return view is not None and (view.cordoned or view.state == "draining")

    def open_to_new(self, node: str) -> bool:
        """Whether a new replica may be spread to the node: ready and not cordoned."""
        return self.state(node) == "ready" and not self.cordoned(node)

    def memory_total(self, node: str) -> int:
        """The node's memory (0: unknown)."""
        view = self.views.get(node)
        return view.memory_total_bytes if view is not None else 0

    def has_ready_model(self, node: str, alias: str) -> bool:
        """Whether the node reports the model ready."""
        view = self.views.get(node)
        return view is not None and alias in view.ready_models

    def holds_blob(self, node: str, sha256: str) -> bool:
        """Whether the node holds the blob whole (False for an unknown blob: "")."""
        view = self.views.get(node)
        return bool(sha256) and view is not None and sha256 in view.blobs

    def near_holder(self, node: str, sha256: str) -> bool:
        """Whether another node of the node's site (its `site` label; nodes without one
        count as one site) holds the blob whole: fetched over the LAN, not the uplink."""
        if not sha256:
            return False
        holders = self._holders.get(sha256, {}).get(self.site(node), ())
        return any(holder != node for holder in holders)

    def site(self, node: str) -> str:
        """The node's `site` label ("" when it has none or is not reported)."""
        view = self.views.get(node)
        return view.labels.get(SITE_LABEL, "") if view is not None else ""

    def reports_ready(self, node: str, workload: Workload) -> bool:
        """Whether the node reports the workload (agent or model) ready."""
        view = self.views.get(node)
        if view is None:
            return False
        ready = view.ready_agents if workload.kind == "agent" else view.ready_models
        return workload.name in ready

    def fails_over(self, w: Workload, node: str) -> bool:
        """Whether the workload's replica on this node moves elsewhere."""
        state = self.state(node)
        return state == "draining" or (
            state in ("not-ready", "untrusted") and w.failover == "automatic"
        )

    def stood_in_for(self, w: Workload, node: str) -> bool:
        """Whether another node takes the workload's pinned replica meant for this one:
        its replica there moves away, or the node takes no new replica."""
        return self.fails_over(w, node) or self.cordoned(node)

    def keep_order(self, w: Workload, node: str) -> tuple[bool, bool, int, str]:
        """Which of a workload's nodes keep it first: pinned, ready there, healthiest."""
        return (
            node not in w.pinned,
            not self.reports_ready(node, w),
            RANK[self.state(node)],
            node,
        )
