"""A peer node as a ChunkSource: its FetchBlob stream over the node's mutual-TLS channels.

The peer answers NOT_FOUND when it neither holds nor fetches the blob (the downloader
moves on at once), and UNAVAILABLE "not started yet" when it is about to fetch it
itself: that answer is asked again, with backoff, for up to `not_started_wait`
seconds, then given up so that the downloader goes on to the next source. A stream
that breaks mid-way, or sends nothing for `read_timeout` seconds, raises SourceError
and the downloader resumes from the next source at the bytes it has. The bytes are
verified by the store (`PartialBlob.finish`) once the whole blob is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from edgefleet.v1 import node_pb2, node_pb2_grpc
from node_agent.blobs.errors import SourceError

NOT_STARTED = "not started yet"
"""What a peer's UNAVAILABLE says when it wants the blob but has not begun fetching it."""
NOT_STARTED_WAIT_S = 30.0
READ_TIMEOUT_S = 60.0
"""No chunk for this long: the peer (or the download it follows) is stuck."""
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0


class PeerStubs(Protocol):
    """Where stubs to peers come from (`node_agent.peer_channels.PeerChannels`)."""

    def stub(self, node_id: str, address: str) -> node_pb2_grpc.NodeServiceStub:
        """The node API of peer `node_id` at `address`."""
        ...


class _NotStarted(Exception):
    """The peer will fetch the blob but has not begun."""


class PeerSource:
    """Streams a blob from peer `node_id` at `address`, asked for by `sha256` and/or the
    `source` it is downloaded from (at least one)."""

    def __init__(
        self,
        peers: PeerStubs,
        node_id: str,
        address: str,
        *,
        sha256: str = "",
        source: str = "",
        not_started_wait: float = NOT_STARTED_WAIT_S,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        if not sha256 and not source:
            raise ValueError("a PeerSource needs the blob's sha256 or its source")
        self.peers = peers
        self.node_id = node_id
        self.address = address
        self.sha256 = sha256
        self.source = source
        self.name = f"peer {node_id}"
        self.total: int | None = None
        self.not_started_wait = not_started_wait
        self.read_timeout = read_timeout

    def __repr__(self) -> str:
        return f"PeerSource({self.node_id!r}, {self.address!r})"

    async def chunks(self, offset: int) -> AsyncIterator[bytes]:
        """The blob's bytes from `offset` on; SourceError (naming the peer) when the
        peer does not have it, is not ready in time, or the stream breaks."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.not_started_wait
        delay = RETRY_FIRST_S
        while True:
            try:
                async for data in self._stream(offset):
                    offset += len(data)
                    yield data
                return
            except _NotStarted:
                left = give_up - loop.time()
                if left <= 0:
                    raise SourceError(
                        f"{self.name} had not started fetching the blob after "
                        f"{self.not_started_wait:.0f}s"
                    ) from None
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, RETRY_MAX_S)

    async def _stream(self, offset: int) -> AsyncIterator[bytes]:
        stub = self.peers.stub(self.node_id, self.address)
        request = node_pb2.FetchBlobRequest(sha256=self.sha256, source=self.source, offset=offset)
        call = stub.FetchBlob(request)
        position = offset
        try:
            while True:
                try:
                    async with asyncio.timeout(self.read_timeout):
                        message = await call.read()
                except TimeoutError:
                    raise SourceError(
                        f"{self.name} sent nothing for {self.read_timeout:.0f}s"
                    ) from None
                if message is grpc.aio.EOF:
                    return
                self._check(message, position)
                position += len(message.data)
                if message.data:
                    yield message.data
        except grpc.aio.AioRpcError as exc:
            raise self._refusal(exc, position) from None
        finally:
            call.cancel()

    def _check(self, chunk: node_pb2.BlobChunk, position: int) -> None:
        """A chunk must continue where the last one ended, of the blob asked for."""
        if chunk.offset != position:
            raise SourceError(
                f"{self.name} sent bytes from {chunk.offset} when {position} was next"
            )
        if chunk.sha256 and self.sha256 and chunk.sha256 != self.sha256:
            raise SourceError(f"{self.name} sent blob {chunk.sha256}, not {self.sha256}")
        if chunk.total:
            self.total = chunk.total

    def _refusal(self, error: grpc.aio.AioRpcError, position: int) -> Exception:
        code, details = error.code(), error.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE and NOT_STARTED in details:
            return _NotStarted(details)
        if code == grpc.StatusCode.NOT_FOUND:
            return SourceError(f"{self.name} does not hold the blob")
        return SourceError(
            f"{self.name} failed at byte {position}: {code.name}: {details or 'no reason given'}"
        )
