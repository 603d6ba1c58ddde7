"""The node's last applied desired state on disk, so it serves after a reboot alone.

Written atomically (temp file, fsync, rename, fsync of the folder): after a crash
the file holds either the old state or the new one, never a torn mix.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from edgefleet_contract.desired import NodeDesired

log = logging.getLogger(__name__)

STATE_FILE = "desired-state.json"


class StateFile:
    """Reads and atomically replaces the persisted desired state in a data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE

    def load(self) -> NodeDesired | None:
        """The saved state, or None when there is none or it cannot be read (logged)."""
        try:
            # Bytes, not text: a file that is not even UTF-8 is unreadable like any other
            # and must not keep the node from starting.
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning(
                "cannot read saved state", extra={"path": str(self.path), "error": str(exc)}
            )
            return None
        try:
            return NodeDesired.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]  # not str(exc): it would quote the file's content
            where = ".".join(str(part) for part in first["loc"])
            reason = f"{where}: {first['msg']}" if where else str(first["msg"])
        # Keep the unreadable file for inspection rather than overwrite the evidence.
        try:
            aside = set_aside(self.path)
        except OSError as exc:
            log.error(
                "saved state is unreadable and cannot be set aside; starting empty",
                extra={"path": str(self.path), "error": reason, "move_error": str(exc)},
            )
            return None
        log.error(
            "saved state is unreadable; starting empty",
            extra={"path": str(aside), "error": reason},
        )
        return None

    def save(self, desired: NodeDesired) -> None:
        """Replace the saved state atomically and durably."""
        write_atomic(self.path, desired.model_dump_json(indent=2).encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably (temp file, fsync, rename, fsync of
    the folder): after a crash it holds the old content or the new, never a torn mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def set_aside(path: Path) -> Path:
    """Move an unreadable saved file to a name of its own (`NAME.unreadable-TIME`), kept
    for inspection; earlier ones stay. Returns where it went."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.unreadable-{stamp}")
    for number in itertools.count(1):
        if not aside.exists():
            break
        aside = aside.with_name(f"{path.name}.unreadable-{stamp}-{number}")
    os.replace(path, aside)
    return aside
