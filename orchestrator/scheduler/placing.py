"""One workload's placements while a schedule is computed, sorted into named buckets.

`kept` replicas count towards the desired number; `leaving` ones move off a failed,
untrusted or draining node; `handover` ones stay until their replacements report
ready; `placeholders` stay on a failed node that nothing could replace; `waiting`
and `lost` nodes explain the replicas that are not (yet) where the manifest puts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.scheduler.workloads import Workload


@dataclass
class Placing:
    """One workload's placements during one pass."""

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
    """Pinned nodes that cannot have it now (failed, draining, cordoned); others stand in."""
    replaced: dict[str, str] = field(default_factory=dict)
    """Lost or leaving node -> the node that stands in for it."""
    no_room: set[str] = field(default_factory=set)
    """Nodes refused for lack of memory (told with the final numbers)."""
    full_pins: int = 0
    """Pinned nodes that are up but have no room: their replicas are not placed elsewhere."""
    notes: list[str] = field(default_factory=list)

    @property
    def replicas(self) -> int:
        """How many replicas the workload wants."""
        return self.workload.replicas

    @property
    def unfilled(self) -> int:
        """Replicas neither placed nor left to nodes expected back or pinned but full."""
        return self.replicas - len(self.kept) - len(self.waiting) - self.full_pins
