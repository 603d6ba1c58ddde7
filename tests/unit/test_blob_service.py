"""FetchBlob's answers from a real blob store, and PeerSource reading them over real gRPC."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgefleet.v1 import node_pb2, node_pb2_grpc
from edgefleet_common.grpc_errors import Ctx
from node_agent.blob_service import CHUNK, BlobUnavailable, fetch_blob
from node_agent.blobs import BlobStore, DownloadError, PartialBlob, SourceError, fetch, source_key
from node_agent.blobs.peer_source import NOT_STARTED, PeerSource
from node_agent.errors import InvalidRequest, NotFound
from node_agent.server import status_code, streaming

SIZE = 3 * CHUNK + 1000
SOURCE = "https://models.example/m.gguf"


@dataclass
class Host:
    """What FetchBlob needs of a node: its store, and the blobs it wants but has not begun."""

    blobs: BlobStore
    wanted: set[str] = field(default_factory=set)

    def wants_blob(self, sha256: str, source: str) -> bool:
        return bool({sha256, source} & self.wanted)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def data() -> bytes:
    return os.urandom(SIZE)


def holding(tmp_path: Path, data: bytes) -> Host:
    """A node whose store holds `data` complete."""
    store = BlobStore(tmp_path / "blobs")
    partial = store.partial(sha(data))
    partial.append(data)
    partial.finish(sha(data))
    return Host(store)


def run(scenario: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, 30))


async def answer(
    host: Host, sha256: str = "", source: str = "", offset: int = 0
) -> list[node_pb2.BlobChunk]:
    request = node_pb2.FetchBlobRequest(sha256=sha256, source=source, offset=offset)
    return [chunk async for chunk in fetch_blob(host, request)]


def joined(chunks: list[node_pb2.BlobChunk], offset: int = 0) -> bytes:
    """The chunks' bytes, checked to follow each other from `offset`."""
    position = offset
    for chunk in chunks:
        assert chunk.offset == position
        position += len(chunk.data)
    return b"".join(chunk.data for chunk in chunks)


# -- the servicer ------------------------------------------------------------------------


def test_a_complete_blob_streams_from_the_offset_in_chunks(tmp_path: Path, data: bytes) -> None:
    host = holding(tmp_path, data)
    chunks = run(answer(host, sha(data)))
    assert joined(chunks) == data
    assert [len(c.data) for c in chunks] == [CHUNK, CHUNK, CHUNK, 1000]
    assert {(c.total, c.sha256) for c in chunks} == {(SIZE, sha(data))}
    rest = run(answer(host, sha(data), offset=CHUNK + 7))
    assert joined(rest, CHUNK + 7) == data[CHUNK + 7 :]
    # Asked from its end: one empty chunk that says the size (the asker is complete).
    end = run(answer(host, sha(data), offset=SIZE))
    assert [(c.data, c.offset, c.total) for c in end] == [(b"", SIZE, SIZE)]
    with pytest.raises(InvalidRequest, match=f"offset {SIZE + 1} is past the end"):
        run(answer(host, sha(data), offset=SIZE + 1))


def test_a_blob_is_found_by_the_source_it_was_learned_from(tmp_path: Path, data: bytes) -> None:
    host = holding(tmp_path, data)
    with pytest.raises(NotFound):
        run(answer(host, source=SOURCE))
    host.blobs.learn(SOURCE, sha(data))
    assert joined(run(answer(host, source=SOURCE))) == data


async def follow_while_writing(
    partial: PartialBlob, asking: AsyncIterator[node_pb2.BlobChunk], write: Callable[[], None]
) -> list[node_pb2.BlobChunk]:
    """Read `asking` while `write` runs once the first chunk came."""
    chunks = [await anext(asking)]
    write_task = asyncio.create_task(asyncio.to_thread(write))
    chunks += [chunk async for chunk in asking]
    await write_task
    return chunks


def test_a_blob_being_fetched_is_followed_until_it_is_complete(tmp_path: Path, data: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")
    partial = store.partial(source_key(SOURCE))  # its hash is not known yet
    partial.append(data[:1000])

    def rest() -> None:
        for start in range(1000, SIZE, 100_000):
            partial.append(data[start : start + 100_000])
        partial.finish(None)

    request = node_pb2.FetchBlobRequest(source=SOURCE, offset=10)
    chunks = run(follow_while_writing(partial, fetch_blob(Host(store), request), rest))
    assert joined(chunks, 10) == data[10:]
    last = chunks[-1]
    assert (last.data, last.total, last.sha256) == (b"", SIZE, sha(data))
    # Done: now a complete blob, found by its hash.
    assert joined(run(answer(Host(store), sha(data)))) == data


def test_a_blob_being_fetched_by_its_pin_is_followed(tmp_path: Path, data: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")
    partial = store.partial(sha(data))
    partial.describe(expected=sha(data), total=SIZE)
    partial.append(data[:CHUNK])

    def rest() -> None:
        partial.append(data[CHUNK:])
        partial.finish(sha(data))

    request = node_pb2.FetchBlobRequest(sha256=sha(data))
    chunks = run(follow_while_writing(partial, fetch_blob(Host(store), request), rest))
    assert joined(chunks) == data
    assert {c.total for c in chunks} == {SIZE}
    assert {c.sha256 for c in chunks} == {sha(data)}


def test_an_offset_past_a_known_size_is_invalid_while_fetching(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    store.partial("4" * 64).describe(total=SIZE)
    with pytest.raises(InvalidRequest, match="past the end"):
        run(answer(Host(store), "4" * 64, offset=SIZE + 1))


def test_a_download_that_fails_ends_the_stream_unavailable(tmp_path: Path, data: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")
    partial = store.partial(sha(data))
    partial.append(data[:5000])
    request = node_pb2.FetchBlobRequest(sha256=sha(data))

    def broken() -> None:
        partial.fail("the origin went away")

    with pytest.raises(BlobUnavailable, match="the origin went away") as failed:
        run(follow_while_writing(partial, fetch_blob(Host(store), request), broken))
    assert "resume from another source" in str(failed.value)
    assert status_code(failed.value) == grpc.StatusCode.UNAVAILABLE


def test_a_wanted_blob_not_started_is_unavailable_and_others_are_not_found(
    tmp_path: Path, data: bytes
) -> None:
    host = Host(BlobStore(tmp_path / "blobs"), wanted={sha(data), SOURCE})
    for by in ({"sha256": sha(data)}, {"source": SOURCE}):
        with pytest.raises(BlobUnavailable, match=NOT_STARTED):
            run(answer(host, **by))
    with pytest.raises(NotFound, match="neither holds nor fetches") as missing:
        run(answer(host, sha256="0" * 64))
    assert status_code(missing.value) == grpc.StatusCode.NOT_FOUND
    # Fetching that source for another pin is not the blob asked for.
    host.blobs.partial(source_key("https://other.example/x.gguf")).describe(expected="1" * 64)
    with pytest.raises(NotFound):
        run(answer(host, sha256="2" * 64, source="https://other.example/x.gguf"))


@pytest.mark.parametrize(
    ("sha256", "source", "reason"),
    [
        ("", "", "needs `sha256`"),
        ("ABC" + "0" * 61, "", "uppercase"),
        ("0" * 63, "", "not a SHA-256"),
        ("", "x" * 9000, "longer than"),
    ],
)
def test_malformed_requests_are_invalid(
    tmp_path: Path, sha256: str, source: str, reason: str
) -> None:
    host = Host(BlobStore(tmp_path / "blobs"))
    with pytest.raises(InvalidRequest, match=reason) as bad:
        run(answer(host, sha256, source))
    assert status_code(bad.value) == grpc.StatusCode.INVALID_ARGUMENT


# -- PeerSource over real gRPC ------------------------------------------------------------


class BlobServicer(node_pb2_grpc.NodeServiceServicer):
    """FetchBlob as the node serves it (its error mapping included), on its own."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @streaming
    async def FetchBlob(
        self, request: node_pb2.FetchBlobRequest, context: Ctx
    ) -> AsyncIterator[node_pb2.BlobChunk]:
        async for chunk in fetch_blob(self.host, request):
            yield chunk


class Peers:
    """Plaintext stubs to servers on loopback, by node id."""

    def __init__(self) -> None:
        self.channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, node_id: str, address: str) -> node_pb2_grpc.NodeServiceStub:
        if node_id not in self.channels:
            self.channels[node_id] = grpc.aio.insecure_channel(address)
        return node_pb2_grpc.NodeServiceStub(self.channels[node_id])

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


async def serve(host: Host) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    node_pb2_grpc.add_NodeServiceServicer_to_server(BlobServicer(host), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def with_peer(host: Host, scenario: Callable[[Peers, str], Awaitable[None]]) -> None:
    async def main() -> None:
        server, address = await serve(host)
        peers = Peers()
        try:
            await scenario(peers, address)
        finally:
            await peers.close()
            await server.stop(None)

    run(main())


def test_a_peer_source_downloads_and_the_store_verifies(tmp_path: Path, data: bytes) -> None:
    holder = holding(tmp_path / "a", data)
    mine = BlobStore(tmp_path / "b" / "blobs")

    async def scenario(peers: Peers, address: str) -> None:
        source = PeerSource(peers, "n1", address, sha256=sha(data))
        got = await fetch([source], mine.partial(sha(data)), expected=sha(data))
        assert got == sha(data)
        assert source.total == SIZE
        assert source.name == "peer n1"

    with_peer(holder, scenario)
    path = mine.path(sha(data))
    assert path is not None
    assert path.read_bytes() == data


def test_not_started_is_asked_again_until_the_peer_fetches(tmp_path: Path, data: bytes) -> None:
    store = BlobStore(tmp_path / "a" / "blobs")
    holder = Host(store, wanted={sha(data)})
    mine = BlobStore(tmp_path / "b" / "blobs")

    async def scenario(peers: Peers, address: str) -> None:
        source = PeerSource(peers, "n1", address, sha256=sha(data), not_started_wait=20)
        download = asyncio.create_task(fetch([source], mine.partial(sha(data))))
        await asyncio.sleep(0.3)  # asked once at least, answered "not started yet"
        assert not download.done()
        # As on a node: the download is under way before the blob stops counting as wanted.
        partial = store.partial(sha(data))
        holder.wanted.clear()
        partial.append(data[:1000])
        await asyncio.sleep(0.2)
        partial.append(data[1000:])
        await asyncio.to_thread(partial.finish, sha(data))
        assert await download == sha(data)

    with_peer(holder, scenario)


def test_a_peer_that_never_starts_or_lacks_the_blob_is_given_up(
    tmp_path: Path, data: bytes
) -> None:
    holder = Host(BlobStore(tmp_path / "a" / "blobs"), wanted={sha(data)})
    mine = BlobStore(tmp_path / "b" / "blobs")

    async def scenario(peers: Peers, address: str) -> None:
        waiting = PeerSource(peers, "n1", address, sha256=sha(data), not_started_wait=0.6)
        with pytest.raises(DownloadError, match="peer n1 had not started fetching"):
            await fetch([waiting], mine.partial(sha(data)))
        lacking = PeerSource(peers, "n1", address, sha256="3" * 64)
        with pytest.raises(SourceError, match="peer n1 does not hold the blob"):
            async for _ in lacking.chunks(0):
                pass

    with_peer(holder, scenario)


class Watched:
    """A source that says when it has delivered the bytes up to `at`."""

    def __init__(self, source: PeerSource, at: int) -> None:
        self.source = source
        self.name = source.name
        self.at = at
        self.reached = asyncio.Event()

    async def chunks(self, offset: int) -> AsyncIterator[bytes]:
        position = offset
        async for data in self.source.chunks(offset):
            position += len(data)
            if position >= self.at:
                self.reached.set()
            yield data


def test_a_stream_that_breaks_resumes_from_the_next_source(tmp_path: Path, data: bytes) -> None:
    fetching = BlobStore(tmp_path / "a" / "blobs")
    broken = fetching.partial(sha(data))
    broken.append(data[: CHUNK + 5])
    complete = holding(tmp_path / "c", data)
    mine = BlobStore(tmp_path / "b" / "blobs")

    async def scenario(peers: Peers, first: str) -> None:
        server, second = await serve(complete)
        try:
            watched = Watched(PeerSource(peers, "n1", first, sha256=sha(data)), CHUNK + 5)
            sources = [watched, PeerSource(peers, "n2", second, sha256=sha(data))]
            seen: list[str] = []
            partial = mine.partial(sha(data))
            download = asyncio.create_task(
                fetch(
                    sources,
                    partial,
                    expected=sha(data),
                    progress=lambda done, total, rate, eta, name: seen.append(name),
                )
            )
            await watched.reached.wait()  # all n1 has; it follows its download for more
            broken.fail("its origin broke")
            assert await download == sha(data)
            assert seen[-1] == "peer n2"
        finally:
            await server.stop(None)

    with_peer(Host(fetching), scenario)
    path = mine.path(sha(data))
    assert path is not None
    assert path.read_bytes() == data
