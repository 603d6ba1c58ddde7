"""hf:// sources resolved with huggingface_hub against a Hugging Face style mirror."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from node_agent.blobs import BlobStore, SourceError, fetch, resolve_hf, source_key
from tests.blob_origin import COMMIT, Behaviour, BlobOrigin

DATA = os.urandom(200_000)


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    repo = tmp_path / "www" / "HuggingFaceTB" / "SmolLM2-GGUF" / "q8"
    repo.mkdir(parents=True)
    (repo / "model.gguf").write_bytes(DATA)
    return tmp_path / "www"


def run(
    mirror: Path,
    monkeypatch: pytest.MonkeyPatch,
    scenario: Callable[[BlobOrigin], Awaitable[None]],
    behaviour: Behaviour | None = None,
) -> BlobOrigin:
    origin = BlobOrigin(mirror, behaviour)

    async def main() -> None:
        monkeypatch.setenv("HF_ENDPOINT", await origin.start())
        try:
            await scenario(origin)
        finally:
            await origin.stop()

    asyncio.run(asyncio.wait_for(main(), 60))
    return origin


def test_hf_source_resolves_to_url_pin_and_size(
    mirror: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = BlobStore(tmp_path / "blobs")
    digest = hashlib.sha256(DATA).hexdigest()

    async def scenario(origin: BlobOrigin) -> None:
        found = await resolve_hf("HuggingFaceTB", "SmolLM2-GGUF", "q8/model.gguf")
        assert (found.sha256, found.size, found.commit) == (digest, len(DATA), COMMIT)
        assert found.url.endswith("/HuggingFaceTB/SmolLM2-GGUF/resolve/main/q8/model.gguf")
        assert found.headers == {}
        partial = store.partial(found.sha256 or "")
        assert await fetch([found.origin()], partial, expected=found.sha256) == digest

    origin = run(mirror, monkeypatch, scenario)
    assert [(e.method, e.status) for e in origin.log] == [("HEAD", 200), ("GET", 200)]
    assert store.path(digest) is not None


def test_a_revision_pins_the_commit(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(origin: BlobOrigin) -> None:
        found = await resolve_hf("HuggingFaceTB", "SmolLM2-GGUF", "q8/model.gguf", COMMIT)
        assert f"/resolve/{COMMIT}/" in found.url
        with pytest.raises(SourceError, match="no such revision"):
            await resolve_hf("HuggingFaceTB", "SmolLM2-GGUF", "q8/model.gguf", "v9")

    run(mirror, monkeypatch, scenario)


def test_missing_repo_and_file_say_so(mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario(origin: BlobOrigin) -> None:
        with pytest.raises(SourceError, match="no such file") as caught:
            await resolve_hf("HuggingFaceTB", "SmolLM2-GGUF", "nope.gguf")
        assert "hf://HuggingFaceTB/SmolLM2-GGUF/nope.gguf" in str(caught.value)
        with pytest.raises(SourceError, match="no such repository"):
            await resolve_hf("HuggingFaceTB", "Other", "model.gguf")

    run(mirror, monkeypatch, scenario)


def test_the_token_comes_from_the_named_variable_and_is_never_shown(
    mirror: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = BlobStore(tmp_path / "blobs")

    async def scenario(origin: BlobOrigin) -> None:
        with pytest.raises(SourceError, match="HF_TOKEN_KIOSK") as unset:
            await resolve_hf(
                "HuggingFaceTB", "SmolLM2-GGUF", "q8/model.gguf", token_env="HF_TOKEN_KIOSK"
            )
        monkeypatch.setenv("HF_TOKEN_KIOSK", "hf_wrong")
        with pytest.raises(SourceError) as wrong:
            await resolve_hf(
                "HuggingFaceTB", "SmolLM2-GGUF", "q8/model.gguf", token_env="HF_TOKEN_KIOSK"
            )
        assert "hf_wrong" not in str(wrong.value)
        assert "hf_wrong" not in str(unset.value)

        monkeypatch.setenv("HF_TOKEN_KIOSK", "hf_right")
        found = await resolve_hf(
            "HuggingFaceTB", "SmolLM2-GGUF", "q8/model.gguf", token_env="HF_TOKEN_KIOSK"
        )
        assert "hf_right" not in repr(found)
        await fetch([found.origin()], store.partial(source_key("hf")), expected=found.sha256)

    origin = run(mirror, monkeypatch, scenario, Behaviour(token="hf_right"))
    assert [(e.method, e.status, e.authorized) for e in origin.log] == [
        ("HEAD", 401, False),
        ("HEAD", 200, True),
        ("GET", 200, True),
    ]
