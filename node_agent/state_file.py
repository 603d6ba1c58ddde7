"""The node's last applied desired state on disk, so it serves after a reboot alone.

Written atomically (temp file, fsync, rename, fsync of the folder): after a crash
the file holds either the old state or the new one, never a torn mix.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from node_agent.desired import NodeDesired

log = logging.getLogger(__name__)

STATE_FILE = "desired-state.json"


class StateFile:
    """Reads and atomically replaces the persisted desired state in a data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE

    def load(self) -> NodeDesired | None:
        """The saved state, or None when there is none or it cannot be read (logged)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning(
                "cannot read saved state", extra={"path": str(self.path), "error": str(exc)}
            )
            return None
        try:
            return NodeDesired.model_validate_json(text)
        except ValidationError as exc:
            # Keep the unreadable file for inspection rather than overwrite the evidence.
            aside = self.path.with_suffix(".unreadable")
            os.replace(self.path, aside)
            log.error(
                "saved state is unreadable; starting empty",
                extra={"path": str(aside), "error": str(exc).splitlines()[0]},
            )
            return None

    def save(self, desired: NodeDesired) -> None:
        """Replace the saved state atomically and durably."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(desired.model_dump_json(indent=2))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
