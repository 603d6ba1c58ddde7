"""`edgectl diff -f FILE`: what applying would change. Exit codes follow diff(1):
0 no change, 1 changes, 2 or more on errors (3: controller unreachable)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from edgefleet.v1 import controller_pb2
from orchestrator.cli.client import Controller, add_controller_option, connect, error_text
from orchestrator.cli.console import Consoles
from orchestrator.cli.manifests import load_all
from orchestrator.cli.plan_output import print_plan
from orchestrator.errors import EdgeFleetError
from orchestrator.manifest import LoadedManifest

_DIFF_STYLES = {"+": "green", "-": "red", "@": "cyan"}


def register(commands: Any) -> None:
    """Add the `diff` command."""
    parser = commands.add_parser(
        "diff",
        help="show what applying manifests would change (exit 0 none, 1 changes)",
        description=(
            "Print the plan applying the manifests would carry out, and each manifest's diff "
            "against its deployment's current revision. Exit 0 no change, 1 changes, 2 invalid "
            "manifest or refused request, 3 controller unreachable."
        ),
    )
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="manifest file or folder of *.yaml (repeatable)",
    )
    add_controller_option(parser)
    parser.set_defaults(run=run)


def print_unified_diff(text: str, consoles: Consoles) -> None:
    """A unified diff, coloured on a terminal."""
    for line in text.splitlines():
        style = "bold" if line.startswith(("+++", "---")) else _DIFF_STYLES.get(line[:1], "")
        consoles.out.print(Text(line, style=style))


def _diff_one(controller: Controller, loaded: LoadedManifest, consoles: Consoles) -> bool:
    request = controller_pb2.DiffRequest(manifest=loaded.text, source=loaded.source)
    response = controller.call("Diff", request, controller_pb2.DiffResponse)
    name = loaded.desired.name
    if response.current_revision:
        head = f"deployment {name}: against revision {response.current_revision}"
    else:
        head = f"deployment {name}: new"
    if not response.changed:
        head += ", no change"
    consoles.out.print(head, markup=False, style="bold")
    if response.manifest_diff:
        print_unified_diff(response.manifest_diff, consoles)
    print_plan(response.plan, consoles, dry_run=True)
    return bool(response.changed)


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """Diff every manifest; 1 if any would change."""
    manifests = load_all(args.filename, consoles)
    if manifests is None:
        return 2
    try:
        with connect(args) as controller:
            changed = False
            for index, loaded in enumerate(manifests):
                if index:
                    consoles.out.print()
                changed = _diff_one(controller, loaded, consoles) or changed
    except EdgeFleetError as exc:
        # 1 means "changes" here, so failures answer 2 or more.
        consoles.err.print(error_text(exc), markup=False)
        return max(exc.exit_code, 2)
    return 1 if changed else 0
