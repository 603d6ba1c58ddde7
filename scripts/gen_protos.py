#!/usr/bin/env python3
"""Generate the gRPC code for protos/edgefleet/v1/*.proto (or --check it is current).

The code is checked in next to the .proto files and imported as `edgefleet.v1`.
It is generated with the grpcio-tools version pinned in pyproject.toml, so the
output is the same on every machine.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = Path("edgefleet") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    """The .proto sources, relative to the proto root."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc into `out` (a proto-root-shaped folder); returns the files written."""
    include = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(p) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out / PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def stale_files() -> list[str]:
    """Generated files that differ from, are missing from, or are extra in the checkout."""
    with tempfile.TemporaryDirectory() as temp:
        fresh = {p.name: p for p in generate(Path(temp))}
        checked_in = {
            p.name: p
            for p in (PROTO_ROOT / PACKAGE).iterdir()
            if p.name.endswith(GENERATED_SUFFIXES)
        }
        names = sorted(set(fresh) | set(checked_in))
        return [
            name
            for name in names
            if name not in fresh
            or name not in checked_in
            or not filecmp.cmp(fresh[name], checked_in[name], shallow=False)
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if generated code is stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            names = ", ".join(stale)
            print(
                f"generated gRPC code is stale ({names}): run python scripts/gen_protos.py",
                file=sys.stderr,
            )
            return 1
        return 0
    target = PROTO_ROOT / PACKAGE
    for old in target.iterdir():
        if old.name.endswith(GENERATED_SUFFIXES):
            old.unlink()
    with tempfile.TemporaryDirectory() as temp:
        for path in generate(Path(temp)):
            (target / path.name).write_bytes(path.read_bytes())
            print(f"wrote {(target / path.name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
