"""What the downloader reads from: anything that streams a blob's bytes from an offset.

The origin (HTTP) and a peer node (FetchBlob) both implement ChunkSource, so the
downloader treats them alike and can replace one with the next mid-transfer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable


class ChunkSource(Protocol):
    """A place a blob's bytes come from.

    `name` is what progress shows ("origin", "peer n2"); `chunks(offset)` yields the
    blob's bytes from `offset` to its end, and raises (ideally SourceError, naming
    where it failed) when it cannot go on. It must not send bytes from anywhere else:
    a source that can only restart from 0 raises RangeIgnored before its first chunk.
    """

    name: str

    def chunks(self, offset: int) -> AsyncIterator[bytes]: ...


@runtime_checkable
class KnowsTotal(Protocol):
    """A source that learns the blob's full size (None until it does)."""

    total: int | None
