"""The store's small index: when each blob was last used, and the sha256 learned per source.

One JSON file, replaced atomically on every change: after a crash it holds the old
index or the new one. An unreadable index is set aside and the store starts from the
blobs on disk (last use falls back to the file's modification time).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

from node_agent.state_file import set_aside, write_atomic

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(text: str) -> bool:
    """Whether `text` is a sha256 in the store's spelling (64 lowercase hex digits)."""
    return _SHA256.fullmatch(text) is not None


class BlobIndex:
    """Last use (seconds since the epoch) per sha256, and the sha256 learned per source."""

    def __init__(self, root: Path) -> None:
        self.path = root / INDEX_FILE
        self.last_used: dict[str, float] = {}
        self.learned: dict[str, str] = {}
        self._lock = threading.Lock()  # a download finishes (and records its use) in a thread
        self._load()

    def use(self, sha256: str, when: float) -> None:
        """Record a use of a blob."""
        with self._lock:
            self.last_used[sha256] = when
            self._save()

    def forget(self, sha256: str) -> None:
        """Drop a removed blob."""
        with self._lock:
            if self.last_used.pop(sha256, None) is not None:
                self._save()

    def learn(self, source: str, sha256: str) -> None:
        """Record the sha256 a source served."""
        with self._lock:
            if self.learned.get(source) != sha256:
                self.learned[source] = sha256
                self._save()

    def _save(self) -> None:
        data = {"version": 1, "last_used": self.last_used, "learned": self.learned}
        write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True).encode())

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_bytes())
            last_used = {
                str(k): float(v) for k, v in data["last_used"].items() if is_sha256(str(k))
            }
            learned = {str(k): str(v) for k, v in data["learned"].items() if is_sha256(str(v))}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            try:
                aside = set_aside(self.path)
            except OSError:
                aside = self.path
            log.error(
                "blob index is unreadable; last use falls back to file times",
                extra={"path": str(aside), "error": reason},
            )
            return
        self.last_used, self.learned = last_used, learned
