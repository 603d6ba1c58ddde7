"""`edgectl node cordon|drain|uncordon|revoke ID`: maintenance and membership of one node.

edgectl node cordon ID [--reason TEXT]      # no new work there; what runs stays
edgectl node drain ID [--timeout D] [--reason TEXT]
                                            # cordon, move its work, wait until empty
edgectl node uncordon ID                    # back to normal
edgectl node revoke ID [--reason TEXT]      # stop trusting it
"""

from __future__ import annotations

import argparse
from typing import Any

from edgefleet.v1 import controller_pb2
from orchestrator.cli import drain
from orchestrator.cli.client import add_controller_option, connect
from orchestrator.cli.console import Consoles
from orchestrator.cli.controller_command import duration_seconds


def register(commands: Any) -> None:
    """Add the `node` command."""
    node = commands.add_parser(
        "node",
        help="cordon, drain, uncordon or revoke a node",
        description="Take a node out of scheduling and back (cordon, drain, uncordon), or "
        "stop trusting it (revoke). Cordons are kept across controller restarts.",
    )
    actions = node.add_subparsers(dest="action", metavar="ACTION", required=True)
    cordon = actions.add_parser("cordon", help="no new work on the node; what runs there stays")
    drain_parser = actions.add_parser(
        "drain",
        help="cordon, and move the node's agents and models to other nodes",
        description="Cordon the node and move its agents and models to other nodes, each "
        "replacement ready before the replica it replaces stops; print the progress and "
        "wait until the node is empty. Exit 0 drained, 1 when something cannot move in time "
        "(the node stays draining), 130 on Ctrl-C (the node stays draining).",
    )
    drain_parser.add_argument(
        "--timeout",
        type=duration_seconds,
        default=drain.DEFAULT_TIMEOUT_S,
        metavar="DURATION",
        help=f"give up waiting after this long (default {drain.DEFAULT_TIMEOUT_S:g}s)",
    )
    uncordon = actions.add_parser(
        "uncordon", help="let the node take new work again (ends a drain)"
    )
    revoke = actions.add_parser("revoke", help="stop trusting a node")
    for sub in (cordon, drain_parser, revoke):
        sub.add_argument(
            "--reason", default="", metavar="TEXT", help="recorded with the mark and its event"
        )
    runs = {cordon: run_cordon, drain_parser: run_drain, uncordon: run_uncordon, revoke: run_revoke}
    for sub, run in runs.items():
        sub.add_argument("node_id", metavar="ID")
        add_controller_option(sub)
        sub.set_defaults(run=run)


def _call(args: argparse.Namespace, method: str) -> controller_pb2.NodeMaintenanceResponse:
    request = controller_pb2.NodeMaintenanceRequest(
        node_id=args.node_id, reason=getattr(args, "reason", "")
    )
    with connect(args) as controller:
        return controller.call(method, request, controller_pb2.NodeMaintenanceResponse)


def run_cordon(args: argparse.Namespace, consoles: Consoles) -> int:
    """`node cordon ID`."""
    answer = _call(args, "CordonNode")
    node = args.node_id
    if answer.changed:
        text = f"node {node} cordoned: no new work goes there; what runs there stays"
    elif answer.node.mark == "draining":
        text = f"node {node} is draining, which keeps new work away already; nothing changed"
    else:
        text = f"node {node} is already cordoned; nothing changed"
    consoles.out.print(text, markup=False)
    return 0


def run_uncordon(args: argparse.Namespace, consoles: Consoles) -> int:
    """`node uncordon ID`."""
    answer = _call(args, "UncordonNode")
    node = args.node_id
    if answer.changed:
        text = f"node {node} uncordoned: it takes new work again"
    else:
        text = f"node {node} is not cordoned; nothing changed"
    consoles.out.print(text, markup=False)
    return 0


def run_drain(args: argparse.Namespace, consoles: Consoles) -> int:
    """`node drain ID`: mark it draining, then follow until it is empty."""
    node = args.node_id
    request = controller_pb2.NodeMaintenanceRequest(node_id=node, reason=args.reason)
    with connect(args) as controller:
        answer = controller.call("DrainNode", request, controller_pb2.NodeMaintenanceResponse)
        if answer.changed:
            text = f"node {node} draining: no new work; its agents and models move to other nodes"
        else:
            text = f"node {node} is already draining; following its progress"
        consoles.out.print(text, markup=False)
        try:
            return drain.follow_drain(controller, node, consoles, timeout=args.timeout)
        except KeyboardInterrupt:
            consoles.err.print(
                f"stopped waiting; node {node} stays draining "
                f"(`edgectl node uncordon {node}` stops the drain)",
                markup=False,
            )
            return 130


def run_revoke(args: argparse.Namespace, consoles: Consoles) -> int:
    """`node revoke ID`."""
    with connect(args) as controller:
        answer = controller.call(
            "RevokeNode",
            controller_pb2.RevokeNodeRequest(node_id=args.node_id, reason=args.reason),
            controller_pb2.RevokeNodeResponse,
        )
    consoles.out.print(
        f"node {args.node_id} revoked ({answer.certificates_revoked} certificate(s))",
        markup=False,
    )
    return 0
