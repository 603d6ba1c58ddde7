"""Diagnostics that point at a place in a manifest, and the error that carries them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from orchestrator.errors import EdgeFleetError

Severity = Literal["error", "warning"]
PathPart = str | int
DocPath = tuple[PathPart, ...]


def format_path(path: DocPath) -> str:
    """`("deployment", "agents", 0, "model")` -> `deployment.agents[0].model`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(document)"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about a manifest, located by file, line and column (both from 1)."""

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str | None = None
    severity: Severity = "error"

    def render(self) -> str:
        """`FILE:LINE:COL: error: MESSAGE (path)` plus an indented hint line."""
        where = f" ({self.path})" if self.path and self.path != "(document)" else ""
        text = f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}{where}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return asdict(self)


class ManifestError(EdgeFleetError):
    """A manifest is invalid; carries every diagnostic found, not only the first."""

    exit_code = 1

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: Sequence[Diagnostic] = sorted(
            diagnostics, key=lambda d: (d.file, d.line, d.column, d.message)
        )
        super().__init__("\n".join(d.render() for d in self.diagnostics))

    @property
    def errors(self) -> list[Diagnostic]:
        """Only the diagnostics of severity `error`."""
        return [d for d in self.diagnostics if d.severity == "error"]
