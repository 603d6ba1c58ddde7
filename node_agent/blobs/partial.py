"""A blob being downloaded: bytes appended to `partial/<key>.part`, verified, then renamed.

A partial is never a blob: only `finish()` moves it under `sha256/`, after the sha256
of the whole file on disk matched. A crash leaves the partial (and its JSON sidecar
with what is known about it), from which a later download resumes.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from node_agent.blobs.errors import BlobError, BlobMismatch
from node_agent.state_file import write_atomic

READ_CHUNK = 256 * 1024
FOLLOW_POLL_S = 0.05


class PartialState(enum.Enum):
    """Where a partial stands, for readers that follow it."""

    WRITING = "writing"
    FINISHED = "finished"
    FAILED = "failed"


class PartialBlob:
    """An open partial download; get one from `BlobStore.partial(key)`."""

    def __init__(
        self, key: str, folder: Path, blob_dir: Path, on_state: Callable[[PartialBlob], None]
    ) -> None:
        self.key = key
        self.path = folder / f"{key}.part"
        self.meta_path = folder / f"{key}.json"
        self._blob_dir = blob_dir
        self._on_state = on_state  # the store keeps track of partials being written
        self._file: BinaryIO | None = None
        self.state = PartialState.WRITING
        self.failure = ""
        self.sha256: str | None = None  # set by finish()
        self.restarts = 0  # readers of a restarted partial must stop
        self.meta: dict[str, object] = self._read_meta()
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644))  # keeps its mtime
        self._size = self.path.stat().st_size

    @property
    def size(self) -> int:
        """Bytes on disk so far (where a resumed transfer starts)."""
        return self._size

    @property
    def total(self) -> int | None:
        """The blob's full size when a source or the caller said it."""
        total = self.meta.get("total")
        return total if isinstance(total, int) and total > 0 else None

    @property
    def expected(self) -> str | None:
        """The sha256 the download must match, when known."""
        expected = self.meta.get("expected")
        return expected if isinstance(expected, str) else None

    def describe(self, **fields: str | int | None) -> None:
        """Record what is known (`total`, `expected`, `source`) in the sidecar."""
        meta = dict(self.meta)
        meta.update({name: value for name, value in fields.items() if value is not None})
        if meta != self.meta:
            self.meta = meta
            write_atomic(self.meta_path, json.dumps(meta, sort_keys=True).encode())

    def append(self, chunk: bytes) -> None:
        """Write the next bytes at the end (durable at `finish`)."""
        self._check_writing()
        if self._file is None:
            self._file = self.path.open("ab")
        self._file.write(chunk)
        self._file.flush()  # readers following the partial see it now
        self._size += len(chunk)

    def restart(self) -> None:
        """Drop the bytes so far: the next source sends the file from offset 0. Also
        reopens a partial that failed verification, for another source."""
        if self.state is PartialState.FINISHED:
            raise BlobError(f"partial blob {self.key} is finished already")
        self._close()
        with self.path.open("wb"):
            pass
        self._size = 0
        self.restarts += 1
        if self.state is PartialState.FAILED:
            self.meta_path.unlink(missing_ok=True)
            self.meta = {}
            self._end(PartialState.WRITING, "")

    def finish(self, expected: str | None) -> str:
        """Verify the sha256 of the whole file on disk and rename it into the store
        atomically; returns the sha256. A mismatch with `expected` deletes the partial and
        raises BlobMismatch. Blocking (reads the file): run it in a thread."""
        self._check_writing()
        self._close(sync=True)
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            while block := handle.read(1024 * 1024):
                digest.update(block)
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            error = BlobMismatch(expected, actual)
            self.delete()
            self._end(PartialState.FAILED, str(error))
            raise error
        self._blob_dir.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, self._blob_dir / actual)
        _fsync_folder(self._blob_dir)
        self.meta_path.unlink(missing_ok=True)
        self.sha256 = actual
        self._end(PartialState.FINISHED, "")
        return actual

    def fail(self, reason: str) -> None:
        """End this attempt: readers stop with `reason`; the bytes stay for a resume."""
        if self.state is PartialState.WRITING:
            self._close(sync=True)
            self._end(PartialState.FAILED, reason)

    def delete(self) -> None:
        """Remove the partial and its sidecar from disk."""
        self._close()
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)

    async def follow(self, offset: int, chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """The bytes from `offset` on, following the file as it grows, until the download
        finishes (then the last bytes) or fails (then BlobError saying why)."""
        restarts = self.restarts
        with self.path.open("rb") as handle:  # stays valid across finish()'s rename
            handle.seek(offset)
            while True:
                state = self.state
                if self.restarts != restarts:
                    raise BlobError("the download of this blob started again from the beginning")
                data = handle.read(chunk_size)
                if data:
                    yield data
                elif state is PartialState.FINISHED:
                    return
                elif state is PartialState.FAILED:
                    raise BlobError(f"the download of this blob failed: {self.failure}")
                else:
                    await asyncio.sleep(FOLLOW_POLL_S)

    def _check_writing(self) -> None:
        if self.state is not PartialState.WRITING:
            raise BlobError(f"partial blob {self.key} is {self.state.value}; open it again")

    def _close(self, *, sync: bool = False) -> None:
        if self._file is not None:
            if sync:
                os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def _end(self, state: PartialState, failure: str) -> None:
        self.state, self.failure = state, failure
        self._on_state(self)

    def _read_meta(self) -> dict[str, object]:
        try:
            meta = json.loads(self.meta_path.read_bytes())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
