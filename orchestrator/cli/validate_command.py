"""`edgectl validate -f FILE…`: check manifests without contacting anything."""

from __future__ import annotations

import argparse
import json
from typing import Any

from orchestrator.cli.console import Consoles
from orchestrator.manifest import Diagnostic, LoadedManifest, ManifestError, load_file


def register(commands: Any) -> None:
    """Add the `validate` command."""
    parser = commands.add_parser(
        "validate",
        help="check manifests offline (exit 0 valid, 1 invalid)",
        description="Check manifests offline. Exit 0 when all are valid, 1 when any is not.",
    )
    parser.add_argument(
        "-f", "--filename", action="append", required=True, metavar="FILE", help="manifest file"
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.set_defaults(run=run)


def summary(loaded: LoadedManifest) -> str:
    """One line saying what a valid manifest deploys."""
    desired = loaded.desired
    where = "this device" if desired.type == "single-device" else f"{len(desired.nodes)} node(s)"
    return (
        f"{desired.type} `{desired.name}`: {len(desired.models)} model(s), "
        f"{len(desired.agents)} agent(s) on {where}"
    )


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """Validate every file; report all problems of all files."""
    results: list[dict[str, Any]] = []
    for path in args.filename:
        diagnostics: list[Diagnostic]
        try:
            loaded = load_file(path)
            diagnostics, valid, text = list(loaded.warnings), True, summary(loaded)
        except ManifestError as exc:
            diagnostics, valid, text = list(exc.diagnostics), False, ""
        results.append(
            {
                "file": path,
                "valid": valid,
                "summary": text,
                "errors": [d.to_dict() for d in diagnostics if d.severity == "error"],
                "warnings": [d.to_dict() for d in diagnostics if d.severity == "warning"],
            }
        )
        if args.output == "text":
            for diagnostic in diagnostics:
                consoles.err.print(diagnostic.render(), markup=False)
            if valid:
                consoles.out.print(f"{path}: valid — {text}", markup=False)
            else:
                count = sum(1 for d in diagnostics if d.severity == "error")
                consoles.err.print(f"{path}: invalid ({count} error(s))", markup=False)
    all_valid = all(r["valid"] for r in results)
    if args.output == "json":
        consoles.out.print_json(json.dumps({"valid": all_valid, "files": results}))
    return 0 if all_valid else 1
