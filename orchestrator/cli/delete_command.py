"""`edgectl delete DEPLOYMENT | -f FILE`: remove deployments and print the plan that does it."""

from __future__ import annotations

import argparse
from typing import Any

from edgefleet.v1 import controller_pb2
from orchestrator.cli.client import Controller, add_controller_option, connect
from orchestrator.cli.console import Consoles
from orchestrator.cli.manifests import load_all
from orchestrator.cli.plan_output import print_plan
from orchestrator.errors import UsageError


def register(commands: Any) -> None:
    """Add the `delete` command."""
    parser = commands.add_parser(
        "delete",
        help="remove a deployment: stop its agents, unload its models",
        description=(
            "Remove deployments, named or as declared by manifests. Models another deployment "
            "still needs stay loaded. Exit 0 deleted, 1 unknown or refused, 3 controller "
            "unreachable."
        ),
    )
    parser.add_argument("deployment", nargs="?", metavar="DEPLOYMENT", help="deployment name")
    parser.add_argument(
        "-f", "--filename", action="append", metavar="FILE", help="delete what FILE declares"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    add_controller_option(parser)
    parser.set_defaults(run=run)


def delete_deployment(
    controller: Controller, name: str, consoles: Consoles, *, dry_run: bool = False
) -> controller_pb2.DeleteResponse:
    """Delete one deployment and print the plan."""
    request = controller_pb2.DeleteRequest(deployment=name, dry_run=dry_run)
    response = controller.call("Delete", request, controller_pb2.DeleteResponse)
    if dry_run:
        head = f"deployment {name}: would be deleted (dry run)"
    elif response.deleted:
        head = f"deployment {name}: deleted"
    else:
        head = f"deployment {name}: nothing to delete"
    consoles.out.print(head, markup=False, style="bold")
    print_plan(response.plan, consoles, dry_run=dry_run)
    return response


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """Resolve the names (locally, from manifests if given), then delete each."""
    if bool(args.deployment) == bool(args.filename):
        raise UsageError("delete needs either a DEPLOYMENT name or -f FILE")
    if args.filename:
        manifests = load_all(args.filename, consoles)
        if manifests is None:
            return 1
        names = list(dict.fromkeys(m.desired.name for m in manifests))
    else:
        names = [args.deployment]
    with connect(args) as controller:
        for index, name in enumerate(names):
            if index:
                consoles.out.print()
            delete_deployment(controller, name, consoles, dry_run=args.dry_run)
    return 0
