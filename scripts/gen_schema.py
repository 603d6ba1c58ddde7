#!/usr/bin/env python3
"""Write schemas/manifest.schema.json from the manifest models (or --check it is current)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.manifest.schema import SCHEMA_FILE, render_schema

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args()
    target = ROOT / SCHEMA_FILE
    text = render_schema()
    if args.check:
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            print(f"{SCHEMA_FILE} is stale: run python scripts/gen_schema.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
