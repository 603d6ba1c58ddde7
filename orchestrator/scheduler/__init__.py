"""The scheduler: which node runs which agent and model, and the plan to get there.

Pure: `schedule` reads desired state, the nodes as reported and the last assignment,
and returns a new assignment with the `Plan` that `edgectl diff` prints and the
reconciler carries out. `check_conflicts` says what no placement can solve;
`plan_diff` compares any two assignments.
"""

from orchestrator.scheduler.conflicts import check_conflicts
from orchestrator.scheduler.diff import Reasons, Why, plan_diff
from orchestrator.scheduler.model import (
    Assignment,
    Fetch,
    KnownBlob,
    NodeState,
    NodeView,
    Plan,
    PlanStep,
    Schedule,
    Status,
    StepAction,
    Unplaced,
)
from orchestrator.scheduler.placement import schedule

__all__ = [
    "Assignment",
    "Fetch",
    "KnownBlob",
    "NodeState",
    "NodeView",
    "Plan",
    "PlanStep",
    "Reasons",
    "Schedule",
    "Status",
    "StepAction",
    "Unplaced",
    "Why",
    "check_conflicts",
    "plan_diff",
    "schedule",
]
