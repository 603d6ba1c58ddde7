"""Downloads into the blob store from a real HTTP origin on loopback (tests/blob_origin.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from edgefleet_common.ports import free_port
from node_agent.blobs import (
    BlobMismatch,
    BlobStore,
    ChunkSource,
    DownloadError,
    OriginSource,
    SourceError,
    TokenBucket,
    fetch,
    source_key,
)
from tests.blob_origin import Behaviour, BlobOrigin

SIZE = 300_000


@pytest.fixture
def model(tmp_path: Path) -> bytes:
    data = os.urandom(SIZE)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "m.gguf").write_bytes(data)
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def with_origin(
    tmp_path: Path, behaviour: Behaviour, scenario: Callable[[BlobOrigin, str], Awaitable[None]]
) -> BlobOrigin:
    """Run `scenario(origin, base_url)` against a fresh origin serving tmp_path/www."""
    origin = BlobOrigin(tmp_path / "www", behaviour)

    async def main() -> None:
        url = await origin.start()
        try:
            await scenario(origin, url)
        finally:
            await origin.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
    return origin


def test_download_is_verified_and_reports_progress(tmp_path: Path, model: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")
    reports: list[tuple[int, int | None, float, float | None, str]] = []

    async def scenario(origin: BlobOrigin, url: str) -> None:
        digest = await fetch(
            [OriginSource(f"{url}/m.gguf")],
            store.partial(sha(model)),
            expected=sha(model),
            progress=lambda *report: reports.append(report),
        )
        assert digest == sha(model)

    origin = with_origin(tmp_path, Behaviour(), scenario)
    blob = store.path(sha(model))
    assert blob is not None
    assert blob.read_bytes() == model
    assert origin.bytes_served("/m.gguf") == SIZE
    assert reports[-1] == (SIZE, SIZE, reports[-1][2], 0.0, "origin")


def test_a_dropped_connection_resumes_at_the_offset(tmp_path: Path, model: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")

    async def scenario(origin: BlobOrigin, url: str) -> None:
        await fetch([OriginSource(f"{url}/m.gguf")], store.partial(sha(model)), expected=sha(model))

    origin = with_origin(tmp_path, Behaviour(drop_after=100_000), scenario)
    gets = [entry for entry in origin.log if entry.method == "GET"]
    assert [(e.status, e.start, e.dropped) for e in gets] == [
        (200, 0, True),
        (206, 100_000, False),
    ]
    assert gets[0].bytes_sent == 100_000
    assert origin.bytes_served("/m.gguf") == SIZE
    assert store.path(sha(model)) is not None


def test_a_corrupted_file_is_rejected_and_nothing_is_kept(tmp_path: Path, model: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")
    corrupted = bytearray(model)
    corrupted[SIZE // 2] ^= 0xFF

    async def scenario(origin: BlobOrigin, url: str) -> None:
        with pytest.raises(BlobMismatch) as caught:
            await fetch(
                [OriginSource(f"{url}/m.gguf")], store.partial(sha(model)), expected=sha(model)
            )
        assert (caught.value.expected, caught.value.actual) == (sha(model), sha(bytes(corrupted)))

    with_origin(tmp_path, Behaviour(corrupt=True), scenario)
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []
    assert list((tmp_path / "blobs" / "partial").iterdir()) == []


def test_an_origin_ignoring_range_starts_over_cleanly(tmp_path: Path, model: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")
    partial = store.partial(sha(model))
    partial.append(b"\0" * 5000)  # bytes the whole-file answer must replace

    async def scenario(origin: BlobOrigin, url: str) -> None:
        await fetch([OriginSource(f"{url}/m.gguf")], partial, expected=sha(model))

    origin = with_origin(tmp_path, Behaviour(ignore_range=True), scenario)
    gets = [entry for entry in origin.log if entry.method == "GET"]
    assert [(e.status, e.start) for e in gets] == [(200, 0), (200, 0)]
    assert store.path(sha(model)) is not None


def test_a_complete_partial_needs_no_more_bytes(tmp_path: Path, model: bytes) -> None:
    """A crash after the last byte: the origin answers 416 for the range past the end."""
    store = BlobStore(tmp_path / "blobs")
    key = source_key("http://mirror/m.gguf")
    store.partial(key).append(model)

    async def scenario(origin: BlobOrigin, url: str) -> None:
        assert await fetch([OriginSource(f"{url}/m.gguf")], store.partial(key)) == sha(model)

    origin = with_origin(tmp_path, Behaviour(), scenario)
    assert [(e.status, e.bytes_sent) for e in origin.log] == [(416, 0)]


class FailingPeer:
    """A peer that sends the first `stop` bytes, then its connection breaks (if that was
    not all)."""

    def __init__(self, data: bytes, stop: int) -> None:
        self.name = "peer n2"
        self.total: int | None = len(data)
        self.data, self.stop = data, stop
        self.offsets: list[int] = []

    async def chunks(self, offset: int) -> AsyncIterator[bytes]:
        self.offsets.append(offset)
        for start in range(offset, self.stop, 10_000):
            yield self.data[start : min(start + 10_000, self.stop)]
        if self.stop < len(self.data):
            raise SourceError("peer n2 went away")


def test_a_failing_source_is_replaced_and_the_next_resumes(tmp_path: Path, model: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")
    peer = FailingPeer(model, 120_000)
    seen: list[str] = []

    async def scenario(origin: BlobOrigin, url: str) -> None:
        digest = await fetch(
            [peer, OriginSource(f"{url}/m.gguf")],
            store.partial(sha(model)),
            expected=sha(model),
            progress=lambda done, total, rate, eta, source: seen.append(source),
        )
        assert digest == sha(model)

    origin = with_origin(tmp_path, Behaviour(), scenario)
    assert peer.offsets == [0]
    assert [(e.status, e.start) for e in origin.log] == [(206, 120_000)]
    assert origin.bytes_served() == SIZE - 120_000
    assert seen[0] == "peer n2"
    assert seen[-1] == "origin"


def test_when_every_source_fails_the_error_names_each_without_secrets(
    tmp_path: Path, model: bytes
) -> None:
    store = BlobStore(tmp_path / "blobs")
    closed = f"http://127.0.0.1:{free_port()}/m.gguf"

    async def scenario(origin: BlobOrigin, url: str) -> None:
        sources = [
            OriginSource(f"{url}/missing.gguf?X-Amz-Signature=sig-secret", name="mirror"),
            OriginSource(closed, {"Authorization": "Bearer tok-secret"}),
        ]
        with pytest.raises(DownloadError) as caught:
            await fetch(sources, store.partial(source_key("x")))
        message = str(caught.value)
        assert f"mirror: {url}/missing.gguf answered HTTP 404" in message
        assert f"origin: downloading {closed} failed" in message
        assert "secret" not in message

    with_origin(tmp_path, Behaviour(), scenario)


def test_a_peer_with_bad_bytes_gives_way_to_the_origin(tmp_path: Path, model: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")
    liar = FailingPeer(bytes(len(model)), len(model))

    async def scenario(origin: BlobOrigin, url: str) -> None:
        sources: list[ChunkSource] = [liar, OriginSource(f"{url}/m.gguf")]
        assert await fetch(sources, store.partial(sha(model)), expected=sha(model)) == sha(model)

    origin = with_origin(tmp_path, Behaviour(), scenario)
    assert [(e.status, e.start) for e in origin.log] == [(200, 0)]


class RecordingBucket(TokenBucket):
    def __init__(self) -> None:
        super().__init__(10**12)
        self.taken: list[int] = []

    def reserve(self, n_bytes: int) -> float:
        self.taken.append(n_bytes)
        return super().reserve(n_bytes)


def test_every_byte_goes_through_the_shared_limiter(tmp_path: Path, model: bytes) -> None:
    store = BlobStore(tmp_path / "blobs")
    bucket = RecordingBucket()

    async def scenario(origin: BlobOrigin, url: str) -> None:
        await fetch([OriginSource(f"{url}/m.gguf")], store.partial(sha(model)), limiter=bucket)

    with_origin(tmp_path, Behaviour(), scenario)
    assert sum(bucket.taken) == SIZE
