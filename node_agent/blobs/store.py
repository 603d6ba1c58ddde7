"""The node's content-addressed model store (DATA_DIR/blobs).

    sha256/<hex>          complete blobs, verified before they got there
    partial/<key>.part    downloads in progress or interrupted (+ <key>.json sidecar)
    index.json            last use per blob, sha256 learned per source

A blob in use by a loaded model is pinned and never removed; the others go least
recently used first when a disk budget needs room.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edgefleet_contract.units import format_size
from node_agent.blobs.budget import Removable, choose_removals
from node_agent.blobs.errors import BlobError, NoRoom
from node_agent.blobs.index import BlobIndex, is_sha256
from node_agent.blobs.partial import PartialBlob, PartialState

SOURCE_KEY_PREFIX = "src-"


def source_key(source: str) -> str:
    """The partial key of a download whose sha256 is not known yet: by its source."""
    return SOURCE_KEY_PREFIX + hashlib.sha256(source.encode()).hexdigest()


def _valid_key(key: str) -> bool:
    return is_sha256(key) or (
        key.startswith(SOURCE_KEY_PREFIX) and is_sha256(key.removeprefix(SOURCE_KEY_PREFIX))
    )


@dataclass(frozen=True)
class BlobInfo:
    """A blob the store holds, complete or partial (`sha256` is "" for a partial whose
    hash is not known yet; `size` 0 when unknown)."""

    sha256: str
    size: int
    complete: bool
    bytes_done: int
    last_used: datetime
    key: str


class BlobStore:
    """Blobs by sha256 under `root`, within `budget_bytes` (0: no budget)."""

    def __init__(self, root: Path, *, budget_bytes: int = 0) -> None:
        self.root = root
        self.blob_dir = root / "sha256"
        self.partial_dir = root / "partial"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self.budget = budget_bytes
        self._index = BlobIndex(root)
        self._pins: Counter[str] = Counter()
        self._active: dict[str, PartialBlob] = {}

    def path(self, sha256: str) -> Path | None:
        """The complete, verified blob with this sha256, or None."""
        if not is_sha256(sha256):
            return None
        path = self.blob_dir / sha256
        return path if path.is_file() else None

    def held(self) -> list[BlobInfo]:
        """Every complete blob and every partial download, complete ones first."""
        blobs = []
        for path in sorted(self.blob_dir.iterdir()):
            if is_sha256(path.name) and path.is_file():
                size = path.stat().st_size
                blobs.append(
                    BlobInfo(path.name, size, True, size, self._last_used(path), path.name)
                )
        for path in sorted(self.partial_dir.glob("*.part")):
            key = path.name.removesuffix(".part")
            if not _valid_key(key):
                continue
            partial = self._active.get(key) or PartialBlob(
                key, self.partial_dir, self.blob_dir, self._partial_state
            )
            sha256 = partial.expected or (key if is_sha256(key) else "")
            when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            blobs.append(BlobInfo(sha256, partial.total or 0, False, partial.size, when, key))
        return blobs

    def pin(self, sha256: str) -> None:
        """Mark a blob in use (by a loaded model); pins count, unpin once per pin."""
        self._pins[sha256] += 1
        self.touch(sha256)

    def unpin(self, sha256: str) -> None:
        """Release one pin; an unpinned blob may be removed for room."""
        if self._pins[sha256] <= 1:
            del self._pins[sha256]
        else:
            self._pins[sha256] -= 1

    def pinned(self) -> frozenset[str]:
        """The sha256 of every blob in use."""
        return frozenset(self._pins)

    def touch(self, sha256: str) -> None:
        """Record that a blob was used now (for least-recently-used removal)."""
        self._index.use(sha256, time.time())

    def set_budget(self, budget_bytes: int) -> None:
        """Bytes the store may use (0: no budget); applies at the next make_room."""
        self.budget = budget_bytes

    def usage(self) -> int:
        """Bytes the store uses now: complete blobs and partials."""
        return sum(info.bytes_done for info in self.held())

    def make_room(self, needed: int) -> None:
        """Make `needed` more bytes fit the budget by removing unpinned blobs (and
        abandoned partials) least recently used first; BlobError if that is not enough
        or the disk itself lacks the space."""
        removable, kept = self._removable()
        used = self.usage()
        chosen = choose_removals(removable, used=used, needed=needed, budget=self.budget)
        if chosen is None:
            raise NoRoom(self._no_room(needed, kept))
        for candidate in chosen:
            self._remove(candidate)
        free = shutil.disk_usage(self.root).free
        if free < needed:
            raise NoRoom(
                f"a download needs {format_size(needed)} but the disk holding {self.root} has "
                f"only {format_size(free)} free; free space there or use a smaller model"
            )

    def partial(self, key: str) -> PartialBlob:
        """The partial download `key` (an expected sha256, or `source_key(source)`),
        opened for writing; the same object while it is being written."""
        if not _valid_key(key):
            raise BlobError(f"{key!r} is not a blob key (a sha256, or src- and a sha256)")
        active = self._active.get(key)
        if active is None:
            active = PartialBlob(key, self.partial_dir, self.blob_dir, self._partial_state)
            self._active[key] = active
        return active

    def active(self, key: str) -> PartialBlob | None:
        """The partial `key` if a download is writing it now (peers can follow it)."""
        return self._active.get(key)

    def learned(self, source: str) -> str | None:
        """The sha256 a source's download had, when one finished."""
        return self._index.learned.get(source)

    def learn(self, source: str, sha256: str) -> None:
        """Record the sha256 of what `source` served."""
        if not is_sha256(sha256):
            raise BlobError(f"{sha256!r} is not a sha256 (64 lowercase hex digits)")
        self._index.learn(source, sha256)

    def _partial_state(self, partial: PartialBlob) -> None:
        if partial.state is PartialState.WRITING:
            self._active.setdefault(partial.key, partial)
        elif self._active.get(partial.key) is partial:
            del self._active[partial.key]
        if partial.state is PartialState.FINISHED and partial.sha256 is not None:
            self.touch(partial.sha256)

    def _last_used(self, path: Path) -> datetime:
        stamp = self._index.last_used.get(path.name, path.stat().st_mtime)
        return datetime.fromtimestamp(stamp, UTC)

    def _removable(self) -> tuple[list[Removable], list[BlobInfo]]:
        removable, kept = [], []
        for info in self.held():
            if info.complete and info.sha256 not in self._pins:
                stamp = info.last_used.timestamp()
                removable.append(Removable(info.key, info.size, stamp, complete=True))
            elif not info.complete and info.key not in self._active:
                stamp = info.last_used.timestamp()
                removable.append(Removable(info.key, info.bytes_done, stamp, complete=False))
            else:
                kept.append(info)
        return removable, kept

    def _remove(self, candidate: Removable) -> None:
        if candidate.complete:
            (self.blob_dir / candidate.key).unlink(missing_ok=True)
            self._index.forget(candidate.key)
        else:
            (self.partial_dir / f"{candidate.key}.part").unlink(missing_ok=True)
            (self.partial_dir / f"{candidate.key}.json").unlink(missing_ok=True)

    def _no_room(self, needed: int, kept: list[BlobInfo]) -> str:
        in_use = [info for info in kept if info.complete]
        downloading = sum(info.bytes_done for info in kept if not info.complete)
        pinned = ", ".join(f"{i.sha256[:12]} ({format_size(i.size)})" for i in in_use) or "none"
        return (
            f"not enough room for a model blob: it needs {format_size(needed)}, the disk "
            f"budget for model blobs is {format_size(self.budget)}, blobs in use take "
            f"{format_size(sum(i.size for i in in_use))} (pinned: {pinned}) and downloads in "
            f"progress {format_size(downloading)}; raise resources.max_disk_usage or unload "
            "a model"
        )
