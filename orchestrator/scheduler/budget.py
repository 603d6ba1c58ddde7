"""Memory budgets: the limits that apply to a node, and the memory its models take."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edgefleet_contract.desired import NodeLimits
from edgefleet_contract.units import format_size
from orchestrator.manifest.desired import ResourceLimits


def combine_limits(resources: Sequence[ResourceLimits]) -> NodeLimits:
    """The limits of a node that several deployments name: the most restrictive of each.

    A field no deployment sets stays unlimited; idle unloading is on if any asks for it,
    with the shortest idle timeout among those that ask.
    """
    if not resources:
        return NodeLimits()

    def smallest(values: Sequence[int | None]) -> int:
        # A value of 0 means "unlimited" to the node, so it cannot be the most restrictive.
        return min((v for v in values if v), default=0)

    fractions = [r.max_memory_fraction for r in resources if r.max_memory_fraction]
    unloading = [r for r in resources if r.auto_unload_idle_models]
    return NodeLimits(
        max_memory_bytes=smallest([r.max_memory_bytes for r in resources]),
        max_memory_fraction=min(min(fractions, default=0.0), 1.0),
        model_cache_bytes=smallest([r.model_cache_bytes for r in resources]),
        max_concurrent_agents=smallest([r.max_concurrent_agents for r in resources]),
        max_queue_per_agent=min(r.max_queue_per_agent for r in resources),
        auto_unload_idle_models=bool(unloading),
        idle_timeout_s=min(r.idle_timeout_s for r in (unloading or resources)),
        max_disk_bytes=smallest([r.max_disk_bytes for r in resources]),
        max_download_rate_bps=smallest([r.max_download_rate_bps for r in resources]),
    )


def budget_of(limits: NodeLimits, memory_total_bytes: int) -> int | None:
    """Bytes the node's models may take together; None: unlimited (or cannot be told)."""
    return limits.memory_budget(memory_total_bytes) or None


class Ledger:
    """Which models each node holds in this schedule, for whom, and the memory they take.

    A model stays on a node while anything (an agent, a pin) holds it there; its memory
    counts once however many hold it.
    """

    def __init__(self, budgets: Mapping[str, int | None], sizes: Mapping[str, int]) -> None:
        self._budgets = budgets
        self._sizes = sizes
        self._used: dict[str, int] = {}
        self._holders: dict[str, dict[str, int]] = {}

    def size(self, alias: str) -> int:
        """Memory the model takes once loaded (0 when the manifest does not say)."""
        return self._sizes.get(alias, 0)

    def budget(self, node: str) -> int | None:
        """The node's budget; None: unlimited."""
        return self._budgets.get(node)

    def used(self, node: str) -> int:
        """Memory the node's held models take."""
        return self._used.get(node, 0)

    def free(self, node: str) -> int | None:
        """Memory left on the node; None: unlimited."""
        budget = self.budget(node)
        return None if budget is None else budget - self.used(node)

    def holds(self, node: str, alias: str) -> bool:
        """True when the node already holds the model."""
        return alias in self._holders.get(node, {})

    def fits(self, node: str, alias: str) -> bool:
        """True when the model is on the node already or fits in what is left."""
        free = self.free(node)
        return free is None or self.holds(node, alias) or self.size(alias) <= free

    def acquire(self, node: str, alias: str) -> bool:
        """Hold the model on the node once more; False (and nothing held) if it does not fit."""
        if not self.fits(node, alias):
            return False
        held = self._holders.setdefault(node, {})
        if alias not in held:
            self._used[node] = self.used(node) + self.size(alias)
        held[alias] = held.get(alias, 0) + 1
        return True

    def release(self, node: str, alias: str) -> None:
        """Let go of one hold; the model's memory is free once nothing holds it."""
        held = self._holders[node]
        held[alias] -= 1
        if not held[alias]:
            del held[alias]
            self._used[node] -= self.size(alias)

    def nodes(self) -> list[str]:
        """Nodes that hold (or held) a model in this schedule, sorted."""
        return sorted(self._holders)

    def models_on(self, node: str) -> list[str]:
        """Aliases the node holds, sorted."""
        return sorted(self._holders.get(node, {}))

    def no_room(self, node: str, alias: str) -> str:
        """Why the model does not fit on the node, with the numbers."""
        budget = self.budget(node) or 0
        free = max(budget - self.used(node), 0)
        return (
            f"no room on `{node}`: `{alias}` needs {format_size(self.size(alias))}, "
            f"{format_size(free)} free of {format_size(budget)}"
        )
