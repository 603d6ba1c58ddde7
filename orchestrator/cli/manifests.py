"""Reading manifests before anything is sent: problems print exactly as `edgectl validate`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from orchestrator.cli.console import Consoles
from orchestrator.manifest import LoadedManifest, ManifestError, load_file

SUFFIXES = (".yaml", ".yml")


def manifest_files(path: str | Path) -> list[Path]:
    """A file as itself; a folder as its *.yaml and *.yml files (not recursive), sorted."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
    return [path]


def expand(paths: Sequence[str]) -> list[str]:
    """`-f` arguments with folders replaced by the manifests in them."""
    return [str(file) for path in paths for file in manifest_files(path)]


def load_reporting(path: str, consoles: Consoles) -> LoadedManifest | None:
    """Load one manifest; print its warnings, or its errors and return None."""
    try:
        loaded = load_file(path)
    except ManifestError as exc:
        for diagnostic in exc.diagnostics:
            consoles.err.print(diagnostic.render(), markup=False)
        count = sum(1 for d in exc.diagnostics if d.severity == "error")
        consoles.err.print(f"{path}: invalid ({count} error(s))", markup=False)
        return None
    for warning in loaded.warnings:
        consoles.err.print(warning.render(), markup=False)
    return loaded


def load_all(paths: Sequence[str], consoles: Consoles) -> list[LoadedManifest] | None:
    """Load every manifest, reporting all problems of all files; None if any is invalid."""
    results = [load_reporting(path, consoles) for path in expand(paths)]
    loaded = [result for result in results if result is not None]
    return loaded if len(loaded) == len(results) else None
