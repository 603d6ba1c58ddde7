"""Loading a manifest: read, parse, check structure, check meaning, normalise."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.manifest.checks import check
from orchestrator.manifest.desired import DesiredState
from orchestrator.manifest.diagnostics import Diagnostic, ManifestError
from orchestrator.manifest.normalize import normalize
from orchestrator.manifest.structure import validate_structure
from orchestrator.manifest.yaml_source import parse, read_text


@dataclass(frozen=True, slots=True)
class LoadedManifest:
    """A valid manifest: its desired state, its text, and any warnings."""

    desired: DesiredState
    source: str
    text: str
    warnings: tuple[Diagnostic, ...] = ()


def load_file(path: str | Path, *, tools: Iterable[str] | None = None) -> LoadedManifest:
    """Load and validate a manifest file; raises ManifestError with every problem found."""
    name = str(path)
    return load_text(read_text(name), source=name, tools=tools)


def load_text(
    text: str, *, source: str = "<manifest>", tools: Iterable[str] | None = None
) -> LoadedManifest:
    """Load and validate manifest text; `source` names it in diagnostics."""
    located = parse(text, source)
    document, problems = validate_structure(located)
    if document is None:
        raise ManifestError(problems)
    findings = problems + check(document.deployment, located, tools)
    if any(d.severity == "error" for d in findings):
        raise ManifestError(findings)
    default_name = Path(source).stem if not source.startswith("<") else "default"
    return LoadedManifest(
        desired=normalize(document.deployment, _as_name(default_name)),
        source=source,
        text=text,
        warnings=tuple(findings),
    )


def _as_name(stem: str) -> str:
    """A file stem made into a valid deployment name."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem).strip("._-")
    return (cleaned or "default")[:63]
