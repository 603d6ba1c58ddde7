"""`node drain`: follow a drain until the node is empty, time is up or Ctrl-C.

`item_line` and `leftovers` are pure (a DrainProgress in, words out); the loop
around them polls GetDrainProgress and prints a line for each change: what is
left on the node, what is moving where, what cannot move and why.
"""

from __future__ import annotations

import time

from edgefleet.v1 import controller_pb2
from orchestrator.cli.client import Controller
from orchestrator.cli.console import Consoles

POLL_INTERVAL_S = 0.3
DEFAULT_TIMEOUT_S = 300.0

Item = controller_pb2.DrainItem
_LEAVING = frozenset({"stopping", "unloading"})
"""States of an item that is going away on its own."""


def item_line(item: Item, node_id: str) -> str:
    """`agent assistant (ready on edge-2): moving to edge-3 (starting)`."""
    head = f"{item.kind} {item.name} ({item.state} on {node_id})"
    if item.blocked:
        return f"{head}: cannot move: {item.blocked}"
    if item.targets:
        where = ", ".join(f"{t.node_id} ({t.state})" for t in item.targets)
        return f"{head}: moving to {where}"
    if item.state in _LEAVING:
        return head
    return f"{head}: waiting for another node to take it"


def leftovers(progress: controller_pb2.DrainProgress) -> list[str]:
    """What keeps the node from being drained, one line each."""
    lines = [item_line(item, progress.node_id) for item in progress.items]
    if progress.waiting:
        lines.append(progress.waiting)
    return lines


def follow_drain(
    controller: Controller, node_id: str, consoles: Consoles, *, timeout: float
) -> int:
    """Poll until the node is drained (0), is no longer draining or time is up (1).

    Ctrl-C (KeyboardInterrupt) is the caller's: the node stays draining either way.
    """
    started = time.monotonic()
    deadline = started + timeout
    shown: dict[tuple[str, str], str] = {}
    waiting = ""
    request = controller_pb2.GetDrainProgressRequest(node_id=node_id)
    while True:
        progress = controller.call("GetDrainProgress", request, controller_pb2.DrainProgress)
        current = {(i.kind, i.name): item_line(i, node_id) for i in progress.items}
        for key, line in current.items():
            if shown.get(key) != line:
                consoles.out.print(line, markup=False, highlight=False)
        for kind, name in shown.keys() - current.keys():
            consoles.out.print(f"{kind} {name}: gone from {node_id}", markup=False)
        shown = current
        if progress.waiting != waiting and progress.waiting:
            consoles.out.print(f"waiting: {progress.waiting}", markup=False, highlight=False)
        waiting = progress.waiting
        if progress.mark != "draining":
            now = progress.mark or "uncordoned"
            consoles.err.print(
                f"error: node {node_id} is no longer draining (it is {now}): the drain stopped",
                markup=False,
            )
            return 1
        if progress.drained:
            consoles.out.print(
                f"node {node_id} drained in {time.monotonic() - started:.1f}s: nothing runs "
                f"there; it stays cordoned (`edgectl node uncordon {node_id}` lets it take "
                "work again)",
                markup=False,
            )
            return 0
        if time.monotonic() >= deadline:
            consoles.err.print(
                f"error: node {node_id} is not drained after {timeout:g}s; it stays draining "
                f"(`edgectl node uncordon {node_id}` stops the drain). Still there:",
                markup=False,
            )
            for line in leftovers(progress) or ["(nothing listed yet)"]:
                consoles.err.print(f"  {line}", markup=False, highlight=False)
            return 1
        time.sleep(POLL_INTERVAL_S)
