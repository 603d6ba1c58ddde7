"""FetchBlob: this node serves the model blobs it holds, or is fetching, to its peers.

A complete blob streams from the asked offset to its end. A blob this node is
downloading right now streams what is on disk and follows the file as it grows
until the download finishes; if that download fails, the stream ends UNAVAILABLE
saying so (the peer resumes from another source). A blob this node's desired state
wants but whose download has not started answers UNAVAILABLE "not started yet", which
peers retry for a while; anything else is NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from edgefleet.v1 import node_pb2
from edgefleet_contract.model_source import check_sha256
from node_agent.blobs import BlobError, BlobStore, PartialBlob, source_key
from node_agent.blobs.peer_source import NOT_STARTED
from node_agent.errors import InvalidRequest, NodeError, NotFound

CHUNK = 256 * 1024
"""Bytes per BlobChunk."""
MAX_SOURCE_CHARS = 8192
"""Longest `source` a request may name (a model source is a path or URL)."""


class BlobUnavailable(NodeError):
    """A blob this node fetches (or is about to) cannot be served now; ask again or ask
    another source (UNAVAILABLE)."""


class BlobHost(Protocol):
    """What FetchBlob needs of the node (`node_agent.daemon.Node` provides it)."""

    @property
    def blobs(self) -> BlobStore:
        """The node's blob store."""
        ...

    def wants_blob(self, sha256: str, source: str) -> bool:
        """Whether the desired state wants this blob (by sha256, or by the source it comes
        from when `sha256` is "") and its download has not started yet."""
        ...


def _check(request: node_pb2.FetchBlobRequest) -> str:
    """The request's sha256 ("" when it asks by source); InvalidRequest when malformed."""
    if not request.sha256 and not request.source:
        raise InvalidRequest(
            "FetchBlob needs `sha256` (the blob's hash) or `source` (the model source it "
            "was downloaded from)"
        )
    if len(request.source) > MAX_SOURCE_CHARS:
        raise InvalidRequest(f"`source` is longer than {MAX_SOURCE_CHARS} characters")
    if request.sha256:
        try:
            return check_sha256(request.sha256)
        except ValueError as exc:
            raise InvalidRequest(f"`sha256`: {exc}") from None
    return ""


def _describe(sha256: str) -> str:
    return f"blob {sha256}" if sha256 else "blob of that source"


async def fetch_blob(
    host: BlobHost, request: node_pb2.FetchBlobRequest
) -> AsyncIterator[node_pb2.BlobChunk]:
    """The chunks FetchBlob answers `request` with (node errors for the server to map)."""
    sha256 = _check(request)
    store = host.blobs
    complete = _complete(store, sha256, request.source)
    partial = None if complete is not None else _active(store, sha256, request.source)
    if partial is not None:
        try:
            async for chunk in _follow(partial, sha256, request.offset):
                yield chunk
            return
        except FileNotFoundError:  # it became a blob before the follow opened it
            complete = store.path(partial.sha256) if partial.sha256 else None
    if complete is not None:
        async for chunk in _read_complete(complete, request.offset):
            yield chunk
        return
    if host.wants_blob(sha256, request.source):
        raise BlobUnavailable(
            f"{_describe(sha256)}: {NOT_STARTED} on this node (it will fetch it soon); "
            "ask again shortly or fetch it from another source"
        )
    raise NotFound(f"this node neither holds nor fetches the {_describe(sha256)}")


def _complete(store: BlobStore, sha256: str, source: str) -> Path | None:
    if sha256:
        return store.path(sha256)
    learned = store.learned(source)
    return store.path(learned) if learned is not None else None


def _active(store: BlobStore, sha256: str, source: str) -> PartialBlob | None:
    if sha256 and (partial := store.active(sha256)) is not None:
        return partial
    if not source:
        return None
    partial = store.active(source_key(source))
    if partial is None or (sha256 and partial.expected not in (None, sha256)):
        return None  # fetching that source for another pin: not the blob asked for
    return partial


def _past_end(offset: int, total: int) -> InvalidRequest:
    return InvalidRequest(
        f"offset {offset} is past the end of the blob ({total} bytes); resume from an "
        "offset at most its size"
    )


async def _read_complete(path: Path, offset: int) -> AsyncIterator[node_pb2.BlobChunk]:
    """A complete blob from `offset`, in chunks (one empty chunk at its very end)."""
    try:
        handle = path.open("rb")  # stays readable even if the blob is removed meanwhile
    except FileNotFoundError:
        raise NotFound(f"blob {path.name} was just removed from this node") from None
    with handle:
        total = os.fstat(handle.fileno()).st_size
        if offset > total:
            raise _past_end(offset, total)
        handle.seek(offset)
        position = offset
        while True:
            data = await asyncio.to_thread(handle.read, CHUNK)
            if data or position == offset:  # an empty chunk only to say where the end is
                yield node_pb2.BlobChunk(data=data, offset=position, total=total, sha256=path.name)
            position += len(data)
            if not data or position >= total:
                return


async def _follow(
    partial: PartialBlob, sha256: str, offset: int
) -> AsyncIterator[node_pb2.BlobChunk]:
    """A blob being downloaded, from `offset`, as it grows; a last, empty chunk with its
    size and verified hash once the download finished."""
    known = partial.total
    if known is not None and offset > known:
        raise _past_end(offset, known)
    position = offset
    try:
        async for data in partial.follow(offset, CHUNK):
            yield node_pb2.BlobChunk(
                data=data,
                offset=position,
                total=partial.total or 0,
                sha256=sha256 or partial.expected or "",
            )
            position += len(data)
    except BlobError as exc:
        raise BlobUnavailable(
            f"{exc}; this node stopped serving the blob at byte {position}: resume from "
            "another source"
        ) from None
    total = partial.size  # finished: the whole file
    if offset > total:
        raise _past_end(offset, total)
    yield node_pb2.BlobChunk(
        data=b"", offset=position, total=total, sha256=partial.sha256 or sha256
    )
