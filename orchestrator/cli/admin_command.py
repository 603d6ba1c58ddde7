"""`edgectl admin …`: admin client certificates for the controller API off loopback.

    edgectl admin create NAME [-o FILE] [--controllers A,B,C] [--days N]
    edgectl admin list [-o table|json|yaml]
    edgectl admin revoke NAME

`create` makes the key here (it never leaves this machine), has a controller sign
a request for it, and writes an edgectl config (0600) for `edgectl --config FILE`.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from pathlib import Path
from typing import Any

from edgefleet.v1 import controller_pb2
from edgefleet_common.pki import admin_csr, admin_name_problem, key_pem, new_key
from orchestrator.cli.client import Controller, add_controller_option, connect
from orchestrator.cli.client_config import ClientConfig, valid_address
from orchestrator.cli.console import Consoles
from orchestrator.cli.output import (
    add_output_option,
    is_set,
    new_table,
    print_document,
    print_table,
)
from orchestrator.errors import UsageError


def register(commands: Any) -> None:
    """Add the `admin` command."""
    parser = commands.add_parser(
        "admin",
        help="create, list or revoke admin certificates for the controller API",
        description=(
            "Admin certificates admit edgectl to a controller API off loopback. `create` "
            "writes a config file with the certificate, its key and the controllers; use it "
            "with `edgectl --config FILE` or $EDGEFLEET_CONFIG."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make an admin certificate and its config file")
    create.add_argument("name", metavar="NAME", help="the admin's name (a-z, 0-9, '-')")
    create.add_argument(
        "-o", "--output-file", type=Path, metavar="FILE", help="default: ./NAME.edgefleet.yaml"
    )
    create.add_argument(
        "--controllers",
        metavar="A,B,C",
        default="",
        help="controller addresses (HOST:PORT) the config lists; default: as the cluster says",
    )
    create.add_argument(
        "--days", type=int, default=0, metavar="N", help="lifetime in days (default 365)"
    )
    listing = actions.add_parser("list", help="list admin certificates")
    add_output_option(listing, ("table", "json", "yaml"))
    revoke = actions.add_parser("revoke", help="revoke every certificate of an admin")
    revoke.add_argument("name", metavar="NAME")
    for sub in (create, listing, revoke):
        add_controller_option(sub)
        sub.set_defaults(run=run)


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """`admin create|list|revoke`."""
    if args.action == "create":
        return _create(args, consoles)
    with connect(args) as controller:
        if args.action == "list":
            listed = controller.call(
                "ListAdmins", controller_pb2.ListAdminsRequest(), controller_pb2.ListAdminsResponse
            )
        else:
            revoked = controller.call(
                "RevokeAdmin",
                controller_pb2.RevokeAdminRequest(name=args.name),
                controller_pb2.RevokeAdminResponse,
            )
    if args.action == "revoke":
        done = f"{revoked.revoked} certificate(s) revoked" if revoked.revoked else "nothing left"
        consoles.out.print(f"admin {args.name}: {done}", markup=False)
        return 0
    if args.output in ("json", "yaml"):
        print_document(listed, args.output, consoles)
    elif listed.admins:
        print_table(admins_table(listed.admins), consoles)
    else:
        consoles.err.print("no admin certificates", markup=False)
    return 0


def _create(args: argparse.Namespace, consoles: Consoles) -> int:
    problem = admin_name_problem(args.name)
    if problem is not None:
        raise UsageError(problem)
    flagged = _addresses(args.controllers)
    path: Path = args.output_file or Path(f"{args.name}.edgefleet.yaml")
    if path.exists():
        raise UsageError(f"{path} exists; remove it or write elsewhere with -o FILE")
    key = new_key()
    with connect(args) as controller:
        made = controller.call(
            "CreateAdmin",
            controller_pb2.CreateAdminRequest(
                name=args.name,
                csr_pem=admin_csr(key, args.name).decode(),
                lifetime_days=max(args.days, 0),
            ),
            controller_pb2.CreateAdminResponse,
        )
        controllers = flagged or config_addresses(made.controllers, controller)
    config = ClientConfig(
        cluster=made.cluster,
        controllers=controllers,
        ca_pem=made.ca_pem.encode(),
        cert_pem=made.certificate_pem.encode(),
        key_pem=key_pem(key),
        source=str(path),
    )
    config.write(
        path,
        f"edgectl config for admin {args.name} of cluster {made.cluster}. It holds a\n"
        f"private key: keep it private. Revoke with: edgectl admin revoke {args.name}",
    )
    consoles.out.print(
        f"wrote {path}: admin {args.name}, certificate {made.admin.serial}, valid until "
        f"{_day(made.admin.expires_at)}, controllers {', '.join(controllers)}\n"
        f"use it with: edgectl --config {path} status",
        markup=False,
    )
    return 0


def _addresses(text: str) -> tuple[str, ...]:
    """The `--controllers` list (UsageError for an address that is not HOST:PORT)."""
    addresses = tuple(a.strip() for a in text.split(",") if a.strip())
    for address in addresses:
        if not valid_address(address):
            raise UsageError(f"--controllers: {address!r} is not HOST:PORT, e.g. 10.0.0.1:7440")
    return addresses


def config_addresses(answered: Any, controller: Controller) -> tuple[str, ...]:
    """The controllers a new config lists: those the cluster named (a wildcard host, such
    as 0.0.0.0, replaced by the host edgectl reached), else the one edgectl reached."""
    reached = controller.address.target
    reached_host = reached.rpartition(":")[0]
    found: list[str] = []
    for address in answered:
        host, _, port = address.rpartition(":")
        try:
            wildcard = ipaddress.ip_address(host.strip("[]")).is_unspecified
        except ValueError:
            wildcard = False
        usable = f"{reached_host}:{port}" if wildcard else address
        if valid_address(usable) and usable not in found:
            found.append(usable)
    return tuple(found) or (reached,)


def _day(stamp: Any) -> str:
    if not is_set(stamp):
        return "-"
    moment: datetime.datetime = stamp.ToDatetime(tzinfo=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M")


def admins_table(admins: Any) -> Any:
    """NAME, SERIAL, ISSUED, EXPIRES, REVOKED: one row per certificate."""
    table = new_table("NAME", "SERIAL", "ISSUED", "EXPIRES", "REVOKED")
    for admin in admins:
        table.add_row(
            admin.name,
            admin.serial,
            _day(admin.issued_at),
            _day(admin.expires_at),
            _day(admin.revoked_at) if is_set(admin.revoked_at) else "no",
        )
    return table
