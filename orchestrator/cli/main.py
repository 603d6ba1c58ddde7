"""`edgectl`: drive an EdgeFleet deployment (`--config FILE` for controllers off loopback).
Exit codes: 0 ok, 1 failed/invalid, 2 usage, 3 controller unreachable, 130 interrupted."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from orchestrator import __version__
from orchestrator.cli import (
    admin_command,
    apply_command,
    chat_command,
    controller_command,
    credential_commands,
    delete_command,
    describe_command,
    diff_command,
    events_command,
    get_command,
    node_command,
    rollback_command,
    schema_command,
    status_command,
    up_command,
    validate_command,
)
from orchestrator.cli.client import add_controller_option, error_text
from orchestrator.cli.console import Consoles
from orchestrator.errors import EdgeFleetError

# In the order `edgectl --help` lists them.
COMMANDS = (
    up_command,
    validate_command,
    diff_command,
    apply_command,
    get_command,
    status_command,
    describe_command,
    events_command,
    delete_command,
    rollback_command,
    chat_command,
    node_command,
    controller_command,
    credential_commands,
    admin_command,
    schema_command,
)


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar."""
    parser = argparse.ArgumentParser(
        prog="edgectl",
        description="Deploy AI agents and small language models to edge nodes from one manifest.",
    )
    parser.add_argument("--version", action="version", version=f"edgectl {__version__}")
    add_controller_option(parser)
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
        consoles.err.print(error_text(exc), markup=False, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`edgectl events -f | head`): stop quietly, and keep
        # Python from complaining when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
