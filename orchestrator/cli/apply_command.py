"""`edgectl apply`: validate locally, send each manifest, print the plan; then wait or watch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgefleet.v1 import controller_pb2
from orchestrator.cli import delete_command, rollout, watch
from orchestrator.cli.client import Controller, add_controller_option, connect
from orchestrator.cli.console import Consoles
from orchestrator.cli.manifests import load_all
from orchestrator.cli.plan_output import print_plan
from orchestrator.errors import UsageError
from orchestrator.manifest import LoadedManifest


def register(commands: Any) -> None:
    """Add the `apply` command."""
    parser = commands.add_parser(
        "apply",
        help="apply manifests to the fleet and print the plan",
        description=(
            "Validate manifests locally (nothing is sent if any is invalid), store each as its "
            "deployment's next revision and print the plan. Exit 0 applied, 1 invalid, refused "
            "or not ready in time, 3 controller unreachable."
        ),
    )
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        metavar="FILE",
        help="manifest file or folder of *.yaml (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument(
        "--wait", action="store_true", help="follow the rollout until every agent is ready"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help=f"with --wait: give up after S seconds (default {rollout.DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--watch",
        metavar="PATH",
        help="apply PATH (a file or folder) now and again on every change, until Ctrl-C",
    )
    add_controller_option(parser)
    parser.set_defaults(run=run)


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _check_usage(args: argparse.Namespace) -> None:
    if bool(args.filename) == bool(args.watch):
        raise UsageError("apply needs either -f FILE or --watch PATH")
    if args.wait and (args.watch or args.dry_run):
        raise UsageError("--wait cannot be combined with --watch or --dry-run")
    if args.timeout is not None and not args.wait:
        raise UsageError("--timeout only applies with --wait")
    if args.watch and not Path(args.watch).exists():
        raise UsageError(f"{args.watch}: no such file or folder to watch")


def apply_manifest(
    controller: Controller, loaded: LoadedManifest, consoles: Consoles, *, dry_run: bool = False
) -> controller_pb2.ApplyResponse:
    """Send one valid manifest and print what it did (or would do)."""
    request = controller_pb2.ApplyRequest(
        manifest=loaded.text, source=loaded.source, dry_run=dry_run
    )
    response = controller.call("Apply", request, controller_pb2.ApplyResponse)
    revision = response.revision
    name = revision.deployment or loaded.desired.name
    if not response.changed:
        head = f"deployment {name}: unchanged (revision {revision.number})"
    elif dry_run:
        head = f"deployment {name}: would become revision {revision.number} (dry run)"
    else:
        head = f"deployment {name}: revision {revision.number} applied from {loaded.source}"
    consoles.out.print(head, markup=False, style="bold")
    print_plan(response.plan, consoles, dry_run=dry_run)
    return response


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """Apply once, or wait for the rollout, or watch."""
    _check_usage(args)
    if args.watch:
        return _watch(args, consoles)
    manifests = load_all(args.filename, consoles)
    if manifests is None:
        return 1
    with connect(args) as controller:
        names = []
        for index, loaded in enumerate(manifests):
            if index:
                consoles.out.print()
            response = apply_manifest(controller, loaded, consoles, dry_run=args.dry_run)
            names.append(response.revision.deployment or loaded.desired.name)
        if not args.wait:
            return 0
        expected = rollout.Expected(
            deployments=frozenset(names),
            agents=frozenset(a.name for m in manifests for a in m.desired.agents),
        )
        timeout = args.timeout if args.timeout is not None else rollout.DEFAULT_TIMEOUT_S
        return rollout.wait_for_rollout(controller, expected, consoles, timeout=timeout)


def _watch(args: argparse.Namespace, consoles: Consoles) -> int:
    root = Path(args.watch)
    with watch.interruptible():
        try:
            with connect(args) as controller:

                def apply(loaded: LoadedManifest) -> str:
                    response = apply_manifest(controller, loaded, consoles, dry_run=args.dry_run)
                    return response.revision.deployment or loaded.desired.name

                def delete(name: str) -> None:
                    delete_command.delete_deployment(
                        controller, name, consoles, dry_run=args.dry_run
                    )

                watcher = watch.ManifestWatcher(root, apply, delete, consoles)
                return watch.watch(watcher, consoles)
        except KeyboardInterrupt:
            # Ctrl-C is the way to stop watching, whatever it interrupted (connecting, an
            # apply in flight, a wait): not an error. What was applied stays applied.
            consoles.err.print(f"stopped watching {root}", markup=False)
            return 0
