"""`edgectl schema`: print the manifest's JSON Schema (for editors and CI)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orchestrator.cli.console import Consoles
from orchestrator.manifest.schema import render_schema


def register(commands: Any) -> None:
    """Add the `schema` command."""
    parser = commands.add_parser("schema", help="print the manifest JSON Schema")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """Write the schema to stdout exactly as published."""
    sys.stdout.write(render_schema())
    return 0
