"""Where edgectl writes: rich consoles for results (stdout) and diagnostics (stderr)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console


@dataclass(frozen=True, slots=True)
class Consoles:
    """The pair of consoles every command writes to."""

    out: Console
    err: Console

    @classmethod
    def standard(cls) -> Consoles:
        """Consoles on the process's stdout and stderr; no colour when not a terminal."""
        return cls(
            out=Console(highlight=False, soft_wrap=True),
            err=Console(stderr=True, highlight=False, soft_wrap=True),
        )
