"""Fetch a blob into a partial from a list of sources, resuming where the last one stopped.

Sources are tried in order (peers first, then the origin, as the caller lists them).
A source failing mid-way is replaced by the next, which continues at the partial's
size; as long as a pass over the sources moved bytes, another pass follows. The file
is verified by sha256 before it becomes a blob.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from node_agent.blobs.errors import BlobMismatch, DownloadError, NoRoom, RangeIgnored, SourceError
from node_agent.blobs.partial import PartialBlob
from node_agent.blobs.progress import ProgressFn, ProgressMeter
from node_agent.blobs.rate_limit import TokenBucket
from node_agent.blobs.source import ChunkSource, KnowsTotal

log = logging.getLogger(__name__)

MAX_PASSES = 10


async def fetch(
    sources: Sequence[ChunkSource],
    partial: PartialBlob,
    *,
    expected: str | None = None,
    total: int | None = None,
    rate_bps: int = 0,
    limiter: TokenBucket | None = None,
    progress: ProgressFn | None = None,
    room: Callable[[int], None] | None = None,
) -> str:
    """Download into `partial` and make it a verified blob; returns its sha256.

    `expected`: the pinned sha256 (BlobMismatch names both hashes if the bytes differ);
    `total`: the size when known; `limiter` (shared by a node's downloads) or `rate_bps`
    (0: no limit) bound the rate. `room(bytes)` is called once the size is known, with
    the bytes still to come, to make room for them (NoRoom ends the download). DownloadError,
    listing each source's failure, when no source could deliver the whole blob.
    """
    if not sources:
        raise DownloadError("no source to download the blob from")
    transfer = _Transfer(partial, expected, total, limiter or TokenBucket(rate_bps), progress)
    transfer.room = room
    try:
        return await transfer.run(sources)
    except BaseException as exc:
        partial.fail(str(exc) or type(exc).__name__)  # followers of the partial stop
        raise


class _Transfer:
    def __init__(
        self,
        partial: PartialBlob,
        expected: str | None,
        total: int | None,
        bucket: TokenBucket,
        progress: ProgressFn | None,
    ) -> None:
        self.partial = partial
        self.expected = expected
        self.given_total = total
        partial.describe(expected=expected, total=total)
        self.bucket = bucket
        self.meter = ProgressMeter(progress)
        self.failures: list[str] = []
        self.room: Callable[[int], None] | None = None
        self._room_made = False

    async def run(self, sources: Sequence[ChunkSource]) -> str:
        for _ in range(MAX_PASSES):
            moved = False
            for number, source in enumerate(sources):
                start = self.partial.size
                try:
                    await self._read(source)
                    return await self._finish(source)
                except NoRoom:
                    raise
                except BlobMismatch as exc:
                    if number == len(sources) - 1:
                        raise
                    self._failed(source, exc)
                    self.partial.restart()
                    self.partial.describe(expected=self.expected, total=self.given_total)
                    self.meter.restart()
                except Exception as exc:  # any source failure: the next source may work
                    self._failed(source, exc)
                    moved = moved or self.partial.size > start
            if not moved:
                break
        raise DownloadError("could not download the blob: " + "; ".join(self.failures))

    async def _read(self, source: ChunkSource) -> None:
        """Append what `source` sends from the partial's size to the end."""
        if self._total(source) is not None and self.partial.size == self._total(source):
            return  # complete on disk already (e.g. before a restart)
        try:
            await self._stream(source)
        except RangeIgnored as exc:
            log.info("source restarts from the beginning", extra={"reason": str(exc)})
            self.partial.restart()
            self.meter.restart()
            await self._stream(source)
        total = self._total(source)
        if total is not None and self.partial.size < total:
            raise SourceError(f"it ended after {self.partial.size} of {total} bytes")

    async def _stream(self, source: ChunkSource) -> None:
        chunks = source.chunks(self.partial.size)
        try:
            async for chunk in chunks:
                await self.bucket.take(len(chunk))
                self.partial.append(chunk)
                total = self._total(source)
                if total is not None and self.partial.size > total:
                    self.partial.restart()
                    raise SourceError(f"it sent more than the blob's {total} bytes")
                self.meter.update(self.partial.size, total, source.name)
        finally:
            # Close the source's stream (its connection) now, not when it is collected.
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _finish(self, source: ChunkSource) -> str:
        sha256 = await asyncio.to_thread(self.partial.finish, self.expected)
        self.meter.update(self.partial.size, self.partial.size, source.name, final=True)
        return sha256

    def _total(self, source: ChunkSource) -> int | None:
        if self.partial.total is None and isinstance(source, KnowsTotal) and source.total:
            self.partial.describe(total=source.total)
        total = self.partial.total
        if total is not None and self.room is not None and not self._room_made:
            self._room_made = True
            self.room(max(0, total - self.partial.size))
        return total

    def _failed(self, source: ChunkSource, exc: Exception) -> None:
        reason = str(exc) or type(exc).__name__
        self.failures.append(f"{source.name}: {reason}")
        log.warning(
            "blob source failed; trying the next",
            extra={"source": source.name, "error": reason, "bytes_done": self.partial.size},
        )
