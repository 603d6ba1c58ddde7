"""Where EdgeFleet keeps its state on a machine."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """`$XDG_STATE_HOME/edgefleet` (or `~/.local/state/edgefleet`); `/var/lib/edgefleet` for
    root without XDG_STATE_HOME."""
    if os.geteuid() == 0 and not os.environ.get("XDG_STATE_HOME"):
        return Path("/var/lib/edgefleet")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edgefleet"
