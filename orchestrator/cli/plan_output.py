"""Printing a Plan: one line per step, grouped by node, then what could not be placed.

For example (a blank line separates nodes)::

    + load-model phi-4-mini on edge-1 (pinned by the manifest)
    + start-agent customer-service on edge-1 (pinned by the manifest)

    ! agent documentation not placed (1 replica short): no ready node has 2.0GiB free
    plan: load 1 model, start 1 agent; 1 not placed
"""

from __future__ import annotations

from rich.text import Text

from edgefleet.v1 import controller_pb2
from orchestrator.cli.console import Consoles

Step = controller_pb2.PlanStep

# Action -> (sign, name in the plan, verb and noun in the summary).
_ACTIONS: dict[int, tuple[str, str, str, str]] = {
    Step.ACTION_LOAD_MODEL: ("+", "load-model", "load", "model"),
    Step.ACTION_START_AGENT: ("+", "start-agent", "start", "agent"),
    Step.ACTION_UPDATE_AGENT: ("~", "update-agent", "update", "agent"),
    Step.ACTION_STOP_AGENT: ("-", "stop-agent", "stop", "agent"),
    Step.ACTION_UNLOAD_MODEL: ("-", "unload-model", "unload", "model"),
    Step.ACTION_EVICT_MODEL: ("-", "evict-model", "evict", "model"),
}
_UNKNOWN = ("?", "unknown-step", "do", "unknown step")
_SIGN_STYLES = {"+": "green", "-": "red", "~": "yellow", "?": "dim", "!": "yellow"}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _deployments(plan: controller_pb2.Plan) -> set[str]:
    named = [s.deployment for s in plan.steps] + [u.deployment for u in plan.unplaced]
    return {name for name in named if name}


def step_line(step: controller_pb2.PlanStep, *, show_deployment: bool = False) -> Text:
    """`+ load-model phi-4-mini on edge-1 (pinned by the manifest)`."""
    sign, action, _, _ = _ACTIONS.get(step.action, _UNKNOWN)
    line = Text(f"{sign} ", style=_SIGN_STYLES[sign])
    line.append(f"{action} {step.name} on {step.node_id or '?'}")
    if show_deployment and step.deployment:
        line.append(f" [{step.deployment}]", style="dim")
    if step.reason:
        line.append(f" ({step.reason})", style="dim")
    return line


def unplaced_line(item: controller_pb2.Unplaced, *, show_deployment: bool = False) -> Text:
    """`! agent documentation not placed (1 replica short): REASON`."""
    line = Text("! ", style=_SIGN_STYLES["!"])
    line.append(f"{item.kind or 'work'} {item.name} not placed")
    if show_deployment and item.deployment:
        line.append(f" [{item.deployment}]", style="dim")
    if item.missing:
        line.append(f" ({_plural(item.missing, 'replica')} short)")
    if item.reason:
        line.append(f": {item.reason}")
    return line


def summary(plan: controller_pb2.Plan, *, dry_run: bool = False) -> str:
    """`plan: load 2 models, start 3 agents; 1 not placed` (`would …` for a dry run)."""
    counts: dict[tuple[str, str], int] = {}
    for step in plan.steps:
        _, _, verb, noun = _ACTIONS.get(step.action, _UNKNOWN)
        counts[(verb, noun)] = counts.get((verb, noun), 0) + 1
    # Summary order follows the action table, not the order steps happen to arrive in.
    parts = [
        f"{verb} {_plural(counts[(verb, noun)], noun)}"
        for _, _, verb, noun in (*_ACTIONS.values(), _UNKNOWN)
        if (verb, noun) in counts
    ]
    text = ", ".join(parts) if parts else "no changes"
    if parts and dry_run:
        text = f"would {text}"
    if plan.unplaced:
        text += f"; {len(plan.unplaced)} not placed"
    return f"plan: {text}"


def print_plan(plan: controller_pb2.Plan, consoles: Consoles, *, dry_run: bool = False) -> None:
    """Steps grouped by node (in the order nodes first appear), unplaced work, a summary."""
    several = len(_deployments(plan)) > 1
    by_node: dict[str, list[controller_pb2.PlanStep]] = {}
    for step in plan.steps:
        by_node.setdefault(step.node_id, []).append(step)
    for index, steps in enumerate(by_node.values()):
        if index:
            consoles.out.print()
        for step in steps:
            consoles.out.print(step_line(step, show_deployment=several))
    if plan.unplaced:
        if plan.steps:
            consoles.out.print()
        for item in plan.unplaced:
            consoles.out.print(unplaced_line(item, show_deployment=several))
    consoles.out.print(summary(plan, dry_run=dry_run), markup=False)
