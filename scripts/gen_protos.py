#!/usr/bin/env python3
"""Generate the gRPC code for protos/edgefleet/{v1,etcd}/*.proto (or --check it is current).

The code is checked in next to the .proto files and imported as `edgefleet.v1` (our
contracts) and `edgefleet.etcd` (etcd's v3 API, vendored). It is generated with the
grpcio-tools version pinned in pyproject.toml, so the output is the same on every machine.
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
PACKAGES = (Path("edgefleet") / "v1", Path("edgefleet") / "etcd")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    """The .proto sources, relative to the proto root."""
    return sorted(
        p.relative_to(PROTO_ROOT)
        for package in PACKAGES
        for p in (PROTO_ROOT / package).glob("*.proto")
    )


def generated_in(root: Path) -> dict[Path, Path]:
    """The generated files under a proto-root-shaped folder, by path relative to it."""
    return {
        p.relative_to(root): p
        for package in PACKAGES
        if (root / package).is_dir()
        for p in (root / package).iterdir()
        if p.name.endswith(GENERATED_SUFFIXES)
    }


def generate(out: Path) -> dict[Path, Path]:
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
    return generated_in(out)


def stale_files() -> list[str]:
    """Generated files that differ from, are missing from, or are extra in the checkout."""
    with tempfile.TemporaryDirectory() as temp:
        fresh = generate(Path(temp))
        checked_in = generated_in(PROTO_ROOT)
        names = sorted(set(fresh) | set(checked_in))
        return [
            str(name)
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
    for old in generated_in(PROTO_ROOT).values():
        old.unlink()
    with tempfile.TemporaryDirectory() as temp:
        for name, path in sorted(generate(Path(temp)).items()):
            (PROTO_ROOT / name).write_bytes(path.read_bytes())
            print(f"wrote {(PROTO_ROOT / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
