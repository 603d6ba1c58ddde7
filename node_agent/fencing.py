"""Fencing per target: a request routed with an older table than the target's assignment
is refused.

Each agent and model a node hosts remembers the generation of the desired state that
(re)assigned it: the one that created it or changed its spec. A gateway sends, with
each request, the generation its routing table knew for that replica; an older one
than the target's means the replica moved away (or changed) since that table was
made, so the node refuses it and the gateway tries elsewhere. A target the node's
other changes left alone keeps its generation, so a table that lags a little still
routes to it. Generation 0 means "any" (direct callers such as `edgectl chat`).
"""

from __future__ import annotations

from collections.abc import Iterable

from edgefleet_contract.desired import ItemChange, NodeDesired
from edgefleet_contract.routing import TargetKind
from node_agent.errors import StaleGeneration


class TargetFences:
    """The generation at which each agent and model of the node was (re)assigned."""

    def __init__(self) -> None:
        self._since: dict[tuple[TargetKind, str], int] = {}

    def since(self, kind: TargetKind, name: str) -> int | None:
        """The generation the target was (re)assigned at; None when the node has no such
        target."""
        return self._since.get((kind, name))

    def restored(self, desired: NodeDesired) -> None:
        """After a restart, every target of the saved state at that state's generation:
        when each was assigned is not kept, so the conservative answer."""
        self._since = {("model", m.alias): desired.generation for m in desired.models}
        self._since.update((("agent", a.name), desired.generation) for a in desired.agents)

    def applied(self, desired: NodeDesired, changes: Iterable[ItemChange]) -> None:
        """A new desired state was accepted: what it created or changed is fenced at its
        generation, what it removed is forgotten, the rest keeps its generation."""
        for change in changes:
            key: tuple[TargetKind, str] = (change.kind, change.name)
            if change.action == "removed":
                self._since.pop(key, None)
            elif change.action in ("created", "updated") or key not in self._since:
                self._since[key] = desired.generation

    def check(self, kind: TargetKind, name: str, generation: int) -> None:
        """Refuse (StaleGeneration) a request routed with an older generation than the
        target's; generation 0 and targets the node does not have pass (the host says
        NOT_FOUND for those)."""
        since = self._since.get((kind, name))
        if generation and since is not None and generation < since:
            raise StaleGeneration(
                f"{kind} `{name}` was reassigned to this node at generation {since}; the "
                f"request was routed with generation {generation} (an older routing table), "
                "so another replica must serve it"
            )
