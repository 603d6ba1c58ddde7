"""The content-addressed blob store: partials, verification, pins and the disk budget."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from node_agent.blobs import (
    BlobError,
    BlobMismatch,
    BlobStore,
    PartialState,
    source_key,
)
from node_agent.blobs.budget import Removable, choose_removals


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add_blob(store: BlobStore, data: bytes) -> str:
    partial = store.partial(sha(data))
    partial.append(data)
    return partial.finish(sha(data))


def test_finish_verifies_and_renames_into_place(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(100_000)
    partial = store.partial(sha(data))
    partial.append(data[:40_000])
    partial.append(data[40_000:])
    assert partial.size == len(data)
    assert store.path(sha(data)) is None  # a partial is not a blob

    assert partial.finish(sha(data)) == sha(data)

    blob = store.path(sha(data))
    assert blob is not None
    assert blob.read_bytes() == data
    assert list((tmp_path / "blobs" / "partial").iterdir()) == []
    assert partial.state is PartialState.FINISHED
    assert store.active(sha(data)) is None


def test_mismatch_deletes_the_partial_and_names_both_hashes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    good, bad = b"the model" * 1000, b"another model" * 1000
    partial = store.partial(sha(good))
    partial.append(bad)

    with pytest.raises(BlobMismatch) as caught:
        partial.finish(sha(good))

    assert sha(good) in str(caught.value)
    assert sha(bad) in str(caught.value)
    assert (caught.value.expected, caught.value.actual) == (sha(good), sha(bad))
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []
    assert list((tmp_path / "blobs" / "partial").iterdir()) == []


def test_partial_survives_a_restart_of_the_store(tmp_path: Path) -> None:
    """What a crash leaves: the partial and its sidecar, from which a download resumes."""
    data = os.urandom(10_000)
    key = source_key("https://mirror.lan/m.gguf")
    first = BlobStore(tmp_path / "blobs")
    partial = first.partial(key)
    partial.describe(total=len(data), source="https://mirror.lan/m.gguf")
    partial.append(data[:3000])

    second = BlobStore(tmp_path / "blobs")
    assert [(i.key, i.complete, i.bytes_done, i.size) for i in second.held()] == [
        (key, False, 3000, len(data))
    ]
    resumed = second.partial(key)
    assert (resumed.size, resumed.total) == (3000, len(data))
    resumed.append(data[3000:])
    assert resumed.finish(None) == sha(data)
    assert [(i.sha256, i.complete) for i in second.held()] == [(sha(data), True)]


def test_learned_hashes_and_last_use_persist(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    digest = add_blob(store, b"weights")
    store.learn("hf://org/repo/m.gguf", digest)

    again = BlobStore(tmp_path / "blobs")
    assert again.learned("hf://org/repo/m.gguf") == digest
    assert again.learned("hf://org/repo/other.gguf") is None
    index = json.loads((tmp_path / "blobs" / "index.json").read_text())
    assert digest in index["last_used"]
    with pytest.raises(BlobError, match="not a sha256"):
        store.learn("x", "ABC")


def test_unreadable_index_is_set_aside(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    root.mkdir()
    (root / "index.json").write_text("{not json")
    store = BlobStore(root)
    assert store.learned("anything") is None
    assert [p.name for p in root.glob("index.json.unreadable-*")]


def test_bad_keys_are_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(BlobError, match="not a blob key"):
        store.partial("../../etc/passwd")
    assert store.path("../index.json") is None


def test_budget_removes_least_recently_used_and_never_a_pinned_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", budget_bytes=3000)
    old, in_use, recent = (add_blob(store, bytes([n]) * 1000) for n in (1, 2, 3))
    store.pin(in_use)
    store.touch(recent)
    _backdate(store, {in_use: 2000, old: 1000})  # `in_use` is the oldest, but pinned

    store.make_room(1000)

    held = {info.sha256 for info in store.held()}
    assert held == {in_use, recent}
    store.make_room(1000)  # fits now without removing anything
    assert {info.sha256 for info in store.held()} == {in_use, recent}


def test_not_enough_room_says_what_is_needed_the_budget_and_the_pins(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", budget_bytes=2048)
    in_use = add_blob(store, b"x" * 1024)
    store.pin(in_use)

    with pytest.raises(BlobError) as caught:
        store.make_room(1536)

    message = str(caught.value)
    assert "1.5KiB" in message  # needed
    assert "2.0KiB" in message  # the budget
    assert in_use[:12] in message
    assert "max_disk_usage" in message
    assert store.path(in_use) is not None

    store.unpin(in_use)
    store.make_room(1536)
    assert store.path(in_use) is None


def test_pins_count(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", budget_bytes=1000)
    digest = add_blob(store, b"y" * 1000)
    store.pin(digest)
    store.pin(digest)
    store.unpin(digest)
    assert store.pinned() == frozenset({digest})
    with pytest.raises(BlobError):
        store.make_room(10)
    store.unpin(digest)
    store.make_room(10)
    assert store.pinned() == frozenset()
    assert store.path(digest) is None


def test_abandoned_partials_count_and_may_go_but_active_ones_stay(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    BlobStore(root).partial(source_key("a")).append(b"a" * 1000)  # left by a crash
    store = BlobStore(root, budget_bytes=2000)
    store.partial(source_key("b")).append(b"b" * 1000)  # being written now
    assert store.usage() == 2000

    store.make_room(1000)

    assert [info.key for info in store.held()] == [source_key("b")]
    with pytest.raises(BlobError, match="downloads in progress 1000B"):
        store.make_room(1500)


def test_no_budget_removes_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    digest = add_blob(store, b"z" * 10)
    store.make_room(10**6)
    assert store.path(digest) is not None


def test_choose_removals_is_least_recently_used_first() -> None:
    a, b, c = (Removable(k, 100, t, complete=True) for k, t in (("a", 3), ("b", 1), ("c", 2)))
    assert choose_removals([a, b, c], used=300, needed=50, budget=300) == [b]
    assert choose_removals([a, b, c], used=300, needed=150, budget=300) == [b, c]
    assert choose_removals([a, b, c], used=300, needed=301, budget=300) is None
    assert choose_removals([a], used=300, needed=0, budget=300) == []
    assert choose_removals([a], used=10**9, needed=10**9, budget=0) == []


def test_a_reader_follows_a_growing_partial_to_the_end(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = os.urandom(50_000)
    partial = store.partial(sha(data))

    async def scenario() -> bytes:
        received = bytearray()

        async def read() -> None:
            async for chunk in partial.follow(1000, chunk_size=4096):
                received.extend(chunk)

        reader = asyncio.create_task(read())
        for start in range(0, len(data), 7000):
            partial.append(data[start : start + 7000])
            await asyncio.sleep(0.01)
        await asyncio.to_thread(partial.finish, sha(data))
        await asyncio.wait_for(reader, 10)
        return bytes(received)

    assert asyncio.run(scenario()) == data[1000:]


def test_a_reader_stops_with_the_reason_when_the_download_fails(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    partial = store.partial(source_key("http://mirror/m.gguf"))
    partial.append(b"abc")

    async def scenario() -> None:
        chunks = partial.follow(0)
        assert await anext(chunks) == b"abc"
        partial.fail("origin: HTTP 503")
        await anext(chunks)

    with pytest.raises(BlobError, match="HTTP 503"):
        asyncio.run(asyncio.wait_for(scenario(), 10))
    assert store.active(partial.key) is None
    assert store.partial(partial.key).size == 3  # kept for a resume


def _backdate(store: BlobStore, ages: dict[str, float]) -> None:
    index = store._index
    for digest, seconds in ages.items():
        index.use(digest, index.last_used[digest] - seconds)
