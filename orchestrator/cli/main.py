"""`edgectl`: drive an EdgeFleet deployment. Exit codes: 0 ok, 1 failed/invalid, 2 usage,
3 controller unreachable."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestrator import __version__
from orchestrator.cli import schema_command, validate_command
from orchestrator.cli.console import Consoles
from orchestrator.errors import EdgeFleetError

COMMANDS = (validate_command, schema_command)


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar."""
    parser = argparse.ArgumentParser(
        prog="edgectl",
        description="Deploy AI agents and small language models to edge nodes from one manifest.",
    )
    parser.add_argument("--version", action="version", version=f"edgectl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run edgectl; returns the process exit code."""
    args = build_parser().parse_args(argv)
    consoles = Consoles.standard()
    try:
        code: int = args.run(args, consoles)
    except EdgeFleetError as exc:
        consoles.err.print(f"error: {exc}", markup=False, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
