"""Remote llama.cpp model sources reach a model through the node's blob store: a real
BlobStore, a real HTTP origin on loopback (tests/blob_origin.py) and the ModelManager,
with a stand-in llama.cpp runtime that checks it is given a complete local file."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

from edgefleet_contract.desired import BlobPeer, ModelWant, NodeLimits
from node_agent import models as models_module
from node_agent.blob_status import blob_statuses, delivery_fields
from node_agent.blobs import BlobStore
from node_agent.catalog import Catalog
from node_agent.errors import NotFound
from node_agent.metrics import NodeMetrics
from node_agent.model_fetch import ModelFetcher
from node_agent.models import ModelManager
from node_agent.runtimes.base import (
    LoadedModel,
    ModelEndpoint,
    ModelSource,
    ProgressCallback,
    Runtime,
    RuntimeHealth,
    RuntimeName,
)
from tests.blob_origin import Behaviour, BlobOrigin

pytestmark = pytest.mark.timeout(60)

SIZE = 2 * 1024 * 1024


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 50))


async def until(condition: Callable[[], bool], what: str, within_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within_s:.0f}s: {what}")
        await asyncio.sleep(0.01)


class GgufRuntime(Runtime):
    """Stands in for llama.cpp: a load succeeds when its source is a complete local file,
    and records which file that was."""

    name: RuntimeName = "llama.cpp"

    def __init__(self) -> None:
        super().__init__(None)
        self.loaded_files: dict[str, Path] = {}
        self.loads: list[str] = []
        self.unloads: list[str] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.loaded_files.clear()

    async def load(self, source: ModelSource, progress: ProgressCallback) -> LoadedModel:
        path = Path(source.source)
        is_file = await asyncio.to_thread(path.is_file)
        assert is_file, f"{source.alias} was given {path}, not a local file"
        self.loads.append(source.alias)
        self.loaded_files[source.alias] = path
        return LoadedModel(self.endpoint(source.alias))

    async def unload(self, alias: str) -> None:
        self.unloads.append(alias)
        self.loaded_files.pop(alias, None)

    async def loaded(self) -> list[str]:
        return sorted(self.loaded_files)

    async def health(self) -> RuntimeHealth:
        return RuntimeHealth(True, "stand-in")

    def endpoint(self, alias: str) -> ModelEndpoint:
        if alias not in self.loaded_files:
            raise NotFound(alias)
        return ModelEndpoint(f"http://127.0.0.1:9/{alias}/v1", alias)

    async def memory_used(self) -> int:
        return 0


class Rig:
    """An origin serving random files, a store, a fetcher and a manager over GgufRuntime."""

    def __init__(self, tmp_path: Path, behaviour: Behaviour | None = None) -> None:
        self.root = tmp_path / "origin"
        self.root.mkdir()
        self.origin = BlobOrigin(self.root, behaviour)
        self.store = BlobStore(tmp_path / "node" / "blobs")
        self.fetcher = ModelFetcher(self.store, Catalog())
        self.runtime = GgufRuntime()
        self.manager = ModelManager(
            Catalog(), lambda name, listener: self.runtime, NodeMetrics(), self._seen, self.fetcher
        )
        self.reasons: list[str] = []
        self.downloads: list[dict[str, Any]] = []
        self.url = ""

    def _seen(self) -> None:
        for slot in self.manager.slots():
            if slot.delivery.download is not None:
                self.downloads.append(delivery_fields(slot.delivery))
            if not self.reasons or self.reasons[-1] != slot.reason:
                self.reasons.append(slot.reason)

    def file(self, name: str, size: int = SIZE) -> str:
        """A file of random bytes at the origin; returns its sha256."""
        data = os.urandom(size)
        (self.root / name).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def want(self, alias: str, name: str, **fields: Any) -> ModelWant:
        return ModelWant(alias=alias, runtime="llama.cpp", source=f"{self.url}/{name}", **fields)

    def gets(self, name: str) -> int:
        return sum(1 for e in self.origin.log if e.method == "GET" and e.path == f"/{name}")

    async def apply(self, wants: Sequence[ModelWant], limits: NodeLimits | None = None) -> None:
        limits = limits or NodeLimits()
        self.fetcher.configure(limits)
        await self.manager.reconcile(wants, limits)

    async def state(self, alias: str, state: str) -> None:
        def reached() -> bool:
            return self.manager.state(alias) == state

        await until(
            reached, f"{alias} {state} (now {self.manager.state(alias)}: {self.why(alias)})"
        )

    def why(self, alias: str) -> str:
        slot = self.manager.slot(alias)
        return slot.reason if slot else "absent"

    async def __aenter__(self) -> Rig:
        self.url = await self.origin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.manager.close()
        await self.fetcher.close()
        await self.origin.stop()


def test_a_remote_source_downloads_into_the_store_then_loads_from_there(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path, Behaviour(rate_bps=SIZE)) as rig:
            sha256 = rig.file("m.gguf")
            await rig.apply([rig.want("a", "m.gguf")])
            await rig.state("a", "ready")
            assert rig.runtime.loaded_files["a"] == rig.store.path(sha256)
            assert rig.store.learned(f"{rig.url}/m.gguf") == sha256, "the hash is learned"
            assert rig.store.pinned() == {sha256}
            fields = delivery_fields(rig.manager.slot("a").delivery)  # type: ignore[union-attr]
            assert fields == {"sha256": sha256, "size_bytes": SIZE}, "no download once done"
            # Progress showed while the bytes moved (a throttled origin: about a second).
            assert rig.downloads, f"no download progress in status; reasons: {rig.reasons}"
            last = rig.downloads[-1]["download"]
            assert last.source == "origin"
            assert last.bytes_total == SIZE
            assert any(r.startswith("downloading ") and "% from origin" in r for r in rig.reasons)
            held = blob_statuses(rig.store)
            assert [(b.sha256, b.size_bytes, b.complete) for b in held] == [(sha256, SIZE, True)]

    run(scenario)


def test_a_second_model_with_a_held_blob_loads_without_a_download(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            sha256 = rig.file("m.gguf")
            await rig.apply([rig.want("a", "m.gguf")])
            await rig.state("a", "ready")
            await rig.apply([rig.want("a", "m.gguf"), rig.want("b", "m.gguf", sha256=sha256)])
            await rig.state("b", "ready")
            assert rig.gets("m.gguf") == 1, f"downloaded again: {rig.origin.log}"
            assert rig.runtime.loaded_files["b"] == rig.store.path(sha256)
            # Unloading one model leaves the blob pinned by the other; both: unpinned.
            await rig.manager.unload_now("a")
            assert rig.store.pinned() == {sha256}
            await rig.manager.unload_now("b")
            assert rig.store.pinned() == frozenset()

    run(scenario)


def test_two_models_needing_one_blob_share_one_download(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path, Behaviour(rate_bps=4 * SIZE)) as rig:
            rig.file("m.gguf")
            await rig.apply([rig.want("a", "m.gguf"), rig.want("b", "m.gguf")])
            await rig.state("a", "ready")
            await rig.state("b", "ready")
            assert rig.gets("m.gguf") == 1, f"two downloads: {rig.origin.log}"

    run(scenario)


def test_a_corrupt_download_fails_naming_both_hashes_and_nothing_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models_module, "RETRY_DELAYS", (0.05,))

    async def scenario() -> None:
        async with Rig(tmp_path, Behaviour(corrupt=True)) as rig:
            sha256 = rig.file("m.gguf")
            await rig.apply([rig.want("a", "m.gguf", sha256=sha256)])
            await rig.state("a", "failed")
            reason = rig.why("a")
            assert sha256 in reason, reason
            actual = [w for w in reason.replace(",", " ").split() if len(w) == 64 and w != sha256]
            assert actual, f"the actual hash is not named: {reason}"
            assert rig.runtime.loads == [], "nothing may load from a corrupt file"
            assert rig.store.path(sha256) is None
            assert rig.store.held() == []
            await asyncio.sleep(0.3)  # a pinned mismatch is not retried
            assert rig.gets("m.gguf") == 1
            assert rig.manager.state("a") == "failed"

    run(scenario)


def test_a_missing_file_fails_naming_the_url_without_its_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models_module, "RETRY_DELAYS", (0.05,))

    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            await rig.apply([rig.want("a", "missing.gguf?signature=s3cr3t")])
            await rig.state("a", "failed")
            reason = rig.why("a")
            assert f"{rig.url}/missing.gguf answered HTTP 404" in reason, reason
            assert "s3cr3t" not in reason
            # Retried with the usual backoff: the file may appear.
            rig.file("missing.gguf")
            await rig.state("a", "ready")

    run(scenario)


@pytest.mark.parametrize("sized", [True, False], ids=["size known", "size learned"])
def test_a_disk_budget_removes_the_unused_blob_and_never_the_pinned_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sized: bool
) -> None:
    monkeypatch.setattr(models_module, "RETRY_DELAYS", (0.05,))

    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            first, second, third = rig.file("1.gguf"), rig.file("2.gguf"), rig.file("3.gguf")
            budget = NodeLimits(max_disk_bytes=SIZE * 3 // 2)  # room for one blob
            # Without a size in the desired state, the download learns it from the origin
            # and makes room then.
            size = {"size_bytes": SIZE} if sized else {}
            one = rig.want("one", "1.gguf", **size)
            two = rig.want("two", "2.gguf", **size)
            await rig.apply([one], budget)
            await rig.state("one", "ready")
            # `one` is loaded: its blob is pinned, so `two` cannot have the room.
            await rig.apply([one, two], budget)
            await rig.state("two", "failed")
            reason = rig.why("two")
            assert "not enough room" in reason, reason
            assert "needs " in reason, "names what is needed"
            assert "budget for model blobs is 3.0MiB" in reason, "names the budget"
            assert f"pinned: {first[:12]}" in reason, "names the pinned blob"
            assert rig.store.path(first) is not None, "the pinned blob was removed"
            # Once `one` leaves, its blob is unused: removed for `two` (retried).
            await rig.apply([two], budget)
            await rig.state("two", "ready")
            assert rig.store.path(first) is None
            assert rig.store.path(second) is not None
            # A third while `two` stays loaded: `two`'s blob is never removed.
            three = rig.want("three", "3.gguf", **size)
            await rig.apply([two, three], budget)
            await rig.state("three", "failed")
            assert rig.store.path(second) is not None
            assert rig.store.path(third) is None

    run(scenario)


def test_wants_blob_names_wanted_blobs_not_yet_held(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            sha256 = rig.file("m.gguf")
            pinned = rig.want("a", "m.gguf", sha256=sha256)
            by_source = rig.want("b", "m.gguf")
            assert rig.fetcher.wants_blob([pinned], sha256, "")
            assert rig.fetcher.wants_blob([by_source], "", by_source.source)
            assert not rig.fetcher.wants_blob([by_source], sha256, ""), "hash not known yet"
            assert not rig.fetcher.wants_blob([pinned], "0" * 64, f"{rig.url}/other.gguf")
            await rig.apply([pinned])
            await rig.state("a", "ready")
            assert not rig.fetcher.wants_blob([pinned, by_source], sha256, by_source.source)

    run(scenario)


def test_a_change_of_peers_alone_never_reloads_a_model(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            rig.file("m.gguf")
            await rig.apply([rig.want("a", "m.gguf")])
            await rig.state("a", "ready")
            peer = BlobPeer(node_id="n2", address="127.0.0.1:1", complete=True)
            await rig.apply([rig.want("a", "m.gguf", peers=(peer,))])
            assert rig.manager.state("a") == "ready"
            assert rig.runtime.unloads == []
            slot = rig.manager.slot("a")
            assert slot is not None
            assert slot.want.peers == (peer,), "the new peers are kept"

    run(scenario)


def test_local_sources_load_where_they_are(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Rig(tmp_path) as rig:
            gguf = tmp_path / "local.gguf"
            gguf.write_bytes(b"GGUF" + os.urandom(1000))
            pin = hashlib.sha256(gguf.read_bytes()).hexdigest()
            local = ModelWant(alias="a", runtime="llama.cpp", source=str(gguf))
            pinned = ModelWant(alias="b", runtime="llama.cpp", source=str(gguf), sha256=pin)
            await rig.apply([local, pinned])
            await rig.state("a", "ready")
            await rig.state("b", "ready")
            assert rig.runtime.loaded_files == {"a": gguf, "b": gguf}
            assert rig.store.held() == [], "a local file is not copied into the store"

    run(scenario)
