"""What each node must download before it can load the models a plan gives it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from edgefleet_contract.desired import ModelWant
from edgefleet_contract.model_source import is_remote
from orchestrator.scheduler.fleet_view import FleetView
from orchestrator.scheduler.model import Assignment, Fetch, PlanStep


def blob_fetch(want: ModelWant, node: str, fleet: FleetView) -> Fetch | None:
    """The download loading `want` on the node takes; None when the source is on the node
    (a path, a package, a runtime's own registry) or the node holds the blob already."""
    if not is_remote(want.source) or fleet.holds_blob(node, want.sha256):
        return None
    return Fetch(size=want.size_bytes)


def with_fetches(
    steps: Sequence[PlanStep], assignment: Assignment, fleet: FleetView
) -> tuple[PlanStep, ...]:
    """The steps, each `load-model` with the blob its node must fetch first."""
    found: list[PlanStep] = []
    for step in steps:
        desired = assignment.get(step.node)
        if step.action == "load-model" and desired is not None:
            want = next((m for m in desired.models if m.alias == step.name), None)
            fetch = blob_fetch(want, step.node, fleet) if want is not None else None
            if fetch is not None:
                step = dataclasses.replace(step, fetch=fetch)
        found.append(step)
    return tuple(found)
