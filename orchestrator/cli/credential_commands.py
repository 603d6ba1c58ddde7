"""`edgectl token …` (join tokens for new nodes) and `edgectl apikey …` (gateway API keys).

    edgectl token create [--ttl 1h] [--description TEXT]   # prints the token, once
    edgectl token list [-o table|json|yaml]
    edgectl token revoke ID
    edgectl apikey create|list|revoke …                    # the same, for API keys

Revoking a node is `edgectl node revoke` (see `node_command`).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from edgefleet.v1 import controller_pb2
from orchestrator.cli.client import add_controller_option, connect
from orchestrator.cli.console import Consoles
from orchestrator.cli.controller_command import duration_seconds
from orchestrator.cli.output import (
    add_output_option,
    age,
    is_set,
    new_table,
    print_document,
    print_table,
    styled,
)

KINDS = {"token": "join-token", "apikey": "api-key"}
WHAT = {"token": "join token", "apikey": "API key"}


def register(commands: Any) -> None:
    """Add the `token` and `apikey` commands."""
    for command, what in WHAT.items():
        parser = commands.add_parser(
            command,
            help=f"create, list or revoke {what}s",
            description=(
                "Join tokens let a new box join the cluster (`edge-node run --join TOKEN`)."
                if command == "token"
                else "API keys admit clients to the gateway when it listens off loopback "
                "(`Authorization: Bearer KEY`)."
            )
            + " The secret is shown once, at creation; the controller keeps only its hash.",
        )
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        create = actions.add_parser("create", help=f"make a {what} and print it once")
        create.add_argument(
            "--ttl", type=duration_seconds, default=0.0, metavar="DURATION", help="expire after"
        )
        create.add_argument("--description", default="", help="what it is for")
        listing = actions.add_parser("list", help=f"list {what}s (never their secrets)")
        add_output_option(listing, ("table", "json", "yaml"))
        revoke = actions.add_parser("revoke", help=f"revoke a {what} by id")
        revoke.add_argument("id", metavar="ID")
        for sub in (create, listing, revoke):
            add_controller_option(sub)
            sub.set_defaults(run=run, kind=KINDS[command], what=what)


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """`token|apikey create|list|revoke`."""
    with connect(args) as controller:
        if args.action == "create":
            made = controller.call(
                "CreateCredential",
                controller_pb2.CreateCredentialRequest(
                    kind=args.kind, description=args.description, ttl_s=args.ttl
                ),
                controller_pb2.CreateCredentialResponse,
            )
            consoles.out.print(made.secret, markup=False, highlight=False, soft_wrap=True)
            expires = (
                f"expires in {_left(made.credential.expires_at)}"
                if is_set(made.credential.expires_at)
                else "does not expire"
            )
            consoles.err.print(
                f"{args.what} {made.credential.id} created; {expires}. It is shown only now.",
                markup=False,
            )
            return 0
        if args.action == "list":
            listed = controller.call(
                "ListCredentials",
                controller_pb2.ListCredentialsRequest(kind=args.kind),
                controller_pb2.ListCredentialsResponse,
            )
            if args.output in ("json", "yaml"):
                print_document(listed, args.output, consoles)
            elif listed.credentials:
                print_table(_table(listed.credentials), consoles)
            else:
                consoles.err.print(f"no {args.what}s", markup=False)
            return 0
        revoked = controller.call(
            "RevokeCredential",
            controller_pb2.RevokeCredentialRequest(kind=args.kind, id=args.id),
            controller_pb2.RevokeCredentialResponse,
        )
    verb = "revoked" if revoked.revoked else "was already revoked"
    consoles.out.print(f"{args.what} {args.id} {verb}", markup=False)
    return 0


def _state(view: controller_pb2.CredentialView) -> str:
    if is_set(view.revoked_at):
        return "revoked"
    if is_set(view.expires_at) and view.expires_at.ToSeconds() <= time.time():
        return "expired"
    return "active"


def _left(stamp: Any) -> str:
    seconds = max(0, int(stamp.ToSeconds() - time.time()))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds}s"


def _table(views: Any) -> Any:
    table = new_table("ID", "STATE", "AGE", "EXPIRES IN", "LAST USED", "DESCRIPTION")
    for view in views:
        table.add_row(
            view.id,
            styled(_state(view)),
            age(view.created_at),
            _left(view.expires_at) if is_set(view.expires_at) else "never",
            age(view.last_used_at) + (" ago" if is_set(view.last_used_at) else ""),
            view.description or "-",
        )
    return table
