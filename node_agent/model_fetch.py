"""A llama.cpp model's source made a local GGUF before it loads.

A remote source (`http(s)://`, `hf://`), or any source with a sha256 pin, loads from
the node's blob store: the blob held already (no download), else a download into the
store from the peers the desired state names, in its order, then the origin. The hash
the bytes must have is the pin (the desired state's, else the catalog's), else the
one learned from an earlier download of the same source; a download without either
teaches the store the source's hash. A local path or `pkg:` source without a pin loads
from where it is, as ever; with a pin, from the store when held there, else from its
path (or from the peers, when the path is missing on this node).

One download per blob runs at a time: models that need the same blob wait for it
together. Downloads share the node's `max_download_rate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from edgefleet_contract.desired import BlobPeer, ModelWant, NodeLimits
from edgefleet_contract.model_source import HttpUrl, HuggingFace, is_remote, parse_model_source
from edgefleet_contract.model_source import ModelSource as SourceSpec
from node_agent.blobs import (
    BlobError,
    BlobMismatch,
    BlobStore,
    ChunkSource,
    HfFile,
    NoRoom,
    OriginSource,
    TokenBucket,
    display_url,
    fetch,
    resolve_hf,
    source_key,
)
from node_agent.catalog import Catalog
from node_agent.errors import ModelLoadError, UnknownModel
from node_agent.model_delivery import Delivery, DownloadReport
from node_agent.node_trust import ServingCredentials
from node_agent.peer_channels import PeerChannels
from node_agent.runtimes.base import ModelSource
from node_agent.runtimes.llamacpp_sources import resolve_gguf

log = logging.getLogger(__name__)

Listener = Callable[[DownloadReport], None]


class PinnedMismatch(ModelLoadError):
    """A pinned source serves other bytes than its pin: loading again cannot help."""


class ModelFetcher:
    """Resolves llama.cpp model sources to local GGUF files through the blob store."""

    def __init__(
        self, store: BlobStore, catalog: Catalog, serving: ServingCredentials | None = None
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.limiter = TokenBucket(0)
        """Shared by every download of the node: `max_download_rate`."""
        self.peer_channels = PeerChannels(serving)
        self._downloads: dict[str, _Download] = {}

    def configure(self, limits: NodeLimits) -> None:
        """Take a desired state's disk budget and download rate."""
        self.store.set_budget(limits.max_disk_bytes)
        self.limiter.set_rate(limits.max_download_rate_bps)

    async def prepare(
        self, want: ModelWant, source: ModelSource, delivery: Delivery, say: Callable[[str], None]
    ) -> ModelSource:
        """`source` with its GGUF as a local file, fetched if need be; the blob used is
        pinned (`release` unpins it). `say` is told what happens, for the model's status.
        ModelLoadError (PinnedMismatch: not worth retrying) when it cannot be had."""
        if source.runtime != "llama.cpp":
            return source
        access = self.catalog.access(want)
        remote = is_remote(source.source)
        if not remote and not access.sha256:
            return source
        try:
            parsed = parse_model_source(source.source)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        expected = access.sha256 or self.store.learned(source.source)
        delivery.sha256 = expected or delivery.sha256
        delivery.size_bytes = want.size_bytes or delivery.size_bytes
        held = self.store.path(expected) if expected else None
        if held is None and not remote and (not want.peers or _exists(source.source)):
            return source  # a local file, as ever
        if held is None:
            held = await self._download(want, source.source, parsed, expected, delivery, say)
        self.store.touch(held.name)
        self.release(delivery)
        self.store.pin(held.name)
        delivery.pinned = delivery.sha256 = held.name
        delivery.size_bytes = held.stat().st_size
        try:  # within the budget again: unused blobs go, least recently used first
            self.store.make_room(0)
        except NoRoom as exc:
            self.release(delivery)
            raise ModelLoadError(f"model source {_shown(source.source)}: {exc}") from None
        return dataclasses.replace(source, source=str(held))

    def release(self, delivery: Delivery) -> None:
        """Unpin the blob a model held (unloaded, failed or gone); once is enough."""
        if delivery.pinned:
            self.store.unpin(delivery.pinned)
            delivery.pinned = ""

    def wants_blob(self, wants: Sequence[ModelWant], sha256: str, source: str) -> bool:
        """Whether one of `wants` is a llama.cpp model with that pin (or learned hash) or that
        source whose blob this node does not hold yet (a peer asking for it should wait)."""
        for want in wants:
            try:
                resolved = self.catalog.resolve(want)
            except UnknownModel:
                continue
            if resolved.runtime != "llama.cpp":
                continue
            text = resolved.source
            pin = self.catalog.access(want).sha256 or self.store.learned(text) or ""
            named = (sha256 and pin == sha256) or (source and text == source)
            if named and (not pin or self.store.path(pin) is None):
                return True
        return False

    def downloading(self) -> list[str]:
        """The keys (sha256, or `src-…` by source) of the downloads running now."""
        return sorted(self._downloads)

    async def close(self) -> None:
        """Stop the downloads (their bytes stay for a resume) and close peer channels."""
        tasks = [d.task for d in self._downloads.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.peer_channels.close()

    # -- downloading -----------------------------------------------------------------

    async def _download(
        self,
        want: ModelWant,
        text: str,
        parsed: SourceSpec,
        expected: str | None,
        delivery: Delivery,
        say: Callable[[str], None],
    ) -> Path:
        pinned = bool(self.catalog.access(want).sha256)
        origin, hf = await self._origin(want, parsed, expected)
        if hf is not None and expected is None and hf.sha256:
            expected, pinned = hf.sha256, True  # the Hub's LFS hash is a pin
            held = self.store.path(expected)
            if held is not None:  # the same file, held from another source
                return held
        size = want.size_bytes or (hf.size if hf and hf.size else 0)
        key = expected or source_key(text)
        sources = [*self._peer_sources(want.peers, expected, text), *([origin] if origin else [])]
        if not sources:
            raise ModelLoadError(f"model source {_shown(text)} is not on this node; no peer has it")

        def listener(report: DownloadReport) -> None:
            delivery.download = report
            delivery.size_bytes = report.bytes_total or delivery.size_bytes
            say(report.reason())

        download = self._downloads.get(key)
        if download is None:
            download = _Download()
            download.task = asyncio.create_task(
                self._run(download, key, sources, expected, size, text), name=f"download {key}"
            )
            self._downloads[key] = download
            download.task.add_done_callback(lambda _: self._forget(key, download))
        download.listeners.append(listener)
        try:
            sha256 = await asyncio.shield(download.task)
        except asyncio.CancelledError:
            if len(download.listeners) == 1:  # nobody else waits for it
                download.task.cancel()
            raise
        except BlobMismatch as exc:
            raise (PinnedMismatch if pinned else ModelLoadError)(
                f"model source {_shown(text)}: {exc}"
            ) from None
        except BlobError as exc:
            raise ModelLoadError(f"cannot download model source {_shown(text)}: {exc}") from None
        finally:
            download.listeners.remove(listener)
            delivery.download = None
        say("downloaded; loading the model")
        path = self.store.path(sha256)
        if path is None:
            raise ModelLoadError(
                f"the blob of {_shown(text)} ({sha256}) was removed as soon as it arrived; "
                "raise resources.max_disk_usage"
            )
        return path

    async def _run(
        self,
        download: _Download,
        key: str,
        sources: list[ChunkSource],
        expected: str | None,
        size: int,
        text: str,
    ) -> str:
        partial = self.store.partial(key)
        self.store.make_room(max(0, (size or partial.total or 0) - partial.size))
        log.info(
            "downloading a model blob",
            extra={"source": _shown(text), "key": key, "from": [s.name for s in sources]},
        )
        sha256 = await fetch(
            sources,
            partial,
            expected=expected,
            total=size or None,
            limiter=self.limiter,
            progress=download.report,
            room=self.store.make_room,
        )
        self.store.touch(sha256)
        self.store.learn(text, sha256)  # verified against the pin, or the first of its source
        log.info("model blob downloaded", extra={"source": _shown(text), "sha256": sha256})
        return sha256

    async def _origin(
        self, want: ModelWant, parsed: SourceSpec, expected: str | None
    ) -> tuple[ChunkSource | None, HfFile | None]:
        """The origin as a source (None for a local source), and what the Hub said about an
        hf:// file whose hash is not known yet (asked now: its hash becomes the pin)."""
        if isinstance(parsed, HttpUrl):
            return OriginSource(parsed.url, total=want.size_bytes or None), None
        if not isinstance(parsed, HuggingFace):
            return None, None
        token_env = self.catalog.access(want).token_env
        first = None
        if expected is None:
            try:
                first = await _resolve(parsed, token_env)
            except BlobError as exc:
                raise ModelLoadError(str(exc)) from None
        return _HfOrigin(parsed, token_env, first), first

    def _peer_sources(
        self, peers: Sequence[BlobPeer], expected: str | None, text: str
    ) -> list[ChunkSource]:
        if not peers:
            return []
        # Imported here: a node that never downloads from a peer does without it.
        from node_agent.blobs.peer_source import PeerSource

        return [
            PeerSource(
                self.peer_channels, peer.node_id, peer.address, sha256=expected or "", source=text
            )
            for peer in peers
        ]

    def _forget(self, key: str, download: _Download) -> None:
        if self._downloads.get(key) is download:
            del self._downloads[key]


class _Download:
    """One running download and the models waiting for it."""

    task: asyncio.Task[str]

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def report(
        self, bytes_done: int, total: int | None, rate: float, eta: float | None, source: str
    ) -> None:
        progress = DownloadReport(bytes_done, total or 0, rate, eta or 0.0, source)
        for listener in list(self.listeners):
            listener(progress)


class _HfOrigin:
    """An hf:// file as a source, asked of the Hub anew on every attempt (a URL it
    redirects to may expire); `first` serves the first attempt."""

    name = "origin"

    def __init__(self, file: HuggingFace, token_env: str, first: HfFile | None) -> None:
        self.file, self.token_env, self._first = file, token_env, first
        self.total: int | None = first.size if first else None

    async def chunks(self, offset: int) -> AsyncIterator[bytes]:
        """The file's bytes from `offset`, from wherever the Hub says it is now."""
        hf, self._first = self._first or await _resolve(self.file, self.token_env), None
        origin = hf.origin()
        self.total = hf.size or self.total
        async for chunk in origin.chunks(offset):
            self.total = origin.total or self.total
            yield chunk


async def _resolve(file: HuggingFace, token_env: str) -> HfFile:
    return await resolve_hf(file.org, file.repo, file.file, file.revision, token_env=token_env)


def _exists(source: str) -> bool:
    with contextlib.suppress(ModelLoadError):
        return resolve_gguf(source).is_file()
    return False


def _shown(source: str) -> str:
    """A source fit for messages: a URL without credentials or query."""
    return display_url(source) if source.startswith(("http://", "https://")) else source
