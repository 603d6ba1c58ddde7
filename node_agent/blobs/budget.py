"""Which blobs to remove to fit a disk budget: least recently used first (a pure choice)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Removable:
    """Something on disk the budget may remove: an unused blob or an abandoned partial."""

    key: str
    size: int
    last_used: float
    complete: bool


def choose_removals(
    candidates: Iterable[Removable], *, used: int, needed: int, budget: int
) -> list[Removable] | None:
    """The fewest least-recently-used candidates whose removal makes `used + needed` fit
    `budget`; [] when it fits already or there is no budget (0); None when even removing
    every candidate is not enough."""
    if budget <= 0 or used + needed <= budget:
        return []
    chosen: list[Removable] = []
    for candidate in sorted(candidates, key=lambda c: (c.last_used, c.key)):
        chosen.append(candidate)
        used -= candidate.size
        if used + needed <= budget:
            return chosen
    return None
