"""`edgectl rollback [DEPLOYMENT] [--to N] [--dry-run]`: apply an earlier revision again."""

from __future__ import annotations

import argparse
from typing import Any

from edgefleet.v1 import controller_pb2
from orchestrator.cli.client import Controller, add_controller_option, connect
from orchestrator.cli.console import Consoles
from orchestrator.cli.output import add_output_option, print_document, print_table
from orchestrator.cli.plan_output import print_plan
from orchestrator.cli.tables import revisions_table
from orchestrator.errors import EdgeFleetError, UsageError


def register(commands: Any) -> None:
    """Add the `rollback` command."""
    parser = commands.add_parser(
        "rollback",
        help="apply an earlier revision again, as a new revision (--list: the history)",
        description=(
            "Apply an earlier revision of a deployment again; it is stored as a new revision. "
            "Without DEPLOYMENT: the only deployment. Without --to: the revision before the "
            "current one. --list shows the stored revisions instead."
        ),
    )
    parser.add_argument("deployment", nargs="?", default="", metavar="DEPLOYMENT")
    parser.add_argument("--to", type=int, default=0, metavar="N", help="revision to go back to")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--list", action="store_true", help="list the deployment's revisions")
    add_output_option(parser, ("table", "json", "yaml"))
    add_controller_option(parser)
    parser.set_defaults(run=run)


def _only_deployment(controller: Controller) -> str:
    """The name to use when none was given: there must be exactly one deployment."""
    status = controller.call(
        "GetStatus", controller_pb2.GetStatusRequest(), controller_pb2.ClusterStatus
    )
    names = sorted(d.name for d in status.deployments)
    if len(names) == 1:
        return names[0]
    if not names:
        raise EdgeFleetError("there are no deployments")
    raise UsageError(f"name the deployment: there are {len(names)} ({', '.join(names)})")


def _list(controller: Controller, args: argparse.Namespace, consoles: Consoles) -> int:
    name = args.deployment or _only_deployment(controller)
    revisions = controller.call(
        "ListRevisions",
        controller_pb2.ListRevisionsRequest(deployment=name),
        controller_pb2.ListRevisionsResponse,
    )
    if args.output != "table":
        print_document(revisions, args.output, consoles)
    elif revisions.revisions:
        print_table(revisions_table(revisions.revisions), consoles)
    else:
        consoles.err.print(f"deployment {name}: no revisions", markup=False)
    return 0


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """Roll back (printing the plan and the new revision number), or list revisions."""
    if args.to < 0:
        raise UsageError("--to takes a revision number (1 or more)")
    if args.list and (args.to or args.dry_run):
        raise UsageError("--list cannot be combined with --to or --dry-run")
    with connect(args) as controller:
        if args.list:
            return _list(controller, args, consoles)
        request = controller_pb2.RollbackRequest(
            deployment=args.deployment, to_revision=args.to, dry_run=args.dry_run
        )
        response = controller.call("Rollback", request, controller_pb2.ApplyResponse)
    if args.output != "table":
        print_document(response, args.output, consoles)
        return 0
    revision = response.revision
    cause = f" ({revision.cause})" if revision.cause else ""
    if args.dry_run:
        head = f"deployment {revision.deployment}: would become revision {revision.number}{cause}"
        head += " (dry run)"
    elif response.changed:
        head = f"deployment {revision.deployment}: rolled back as revision {revision.number}{cause}"
    else:
        head = f"deployment {revision.deployment}: unchanged (revision {revision.number})"
    consoles.out.print(head, markup=False, style="bold")
    print_plan(response.plan, consoles, dry_run=args.dry_run)
    return 0
