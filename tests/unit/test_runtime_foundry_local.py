"""The Foundry Local adapter against a stand-in that speaks Foundry Local's documented API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from node_agent.errors import ModelLoadError, NotFound, RuntimeUnavailable
from node_agent.runtimes.base import LoadProgress, ModelSource
from node_agent.runtimes.foundry_local import FoundryLocalRuntime, download_progress
from tests.fakes.foundry_local import FakeFoundryLocal, catalog_entry, write_foundry_cli
from tests.fakes.openai_api import reply_text

CPU_ID = "Phi-4-mini-instruct-generic-cpu:1"
CUDA_ID = "Phi-4-mini-instruct-cuda-gpu:1"
QWEN_ID = "qwen2.5-0.5b-instruct-generic-cpu:3"
MiB = 1024**2


@pytest.fixture
def foundry() -> Iterator[FakeFoundryLocal]:
    catalog = [
        catalog_entry(CPU_ID, "phi-4-mini", "CPU", "CPUExecutionProvider", 4800),
        catalog_entry(CUDA_ID, "phi-4-mini", "GPU", "CUDAExecutionProvider", 3700),
        catalog_entry(
            "qwen2.5-0.5b-instruct-generic-cpu:2",
            "qwen2.5-0.5b",
            "CPU",
            "CPUExecutionProvider",
            800,
        ),
        catalog_entry(QWEN_ID, "qwen2.5-0.5b", "CPU", "CPUExecutionProvider", 822),
    ]
    with FakeFoundryLocal(catalog) as server:
        yield server


def source(name: str = "phi-4-mini", alias: str = "phi-4-mini") -> ModelSource:
    return ModelSource(alias=alias, runtime="foundry-local", source=name)


async def ask(base_url: str, model: str) -> str:
    client = AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=10)
    answer = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
    )
    return answer.choices[0].message.content or ""


def test_download_progress_reads_both_documented_line_shapes() -> None:
    assert download_progress('("model.onnx.data", 0.5)') == ("model.onnx.data", 0.5)
    assert download_progress('("", 1)') == ("", 1.0)
    assert download_progress("Downloading model.onnx.data 42.50%") == (
        "Downloading model.onnx.data 42.50%",
        0.425,
    )
    assert download_progress("starting download") is None


def test_load_downloads_a_missing_model_then_loads_and_serves_it(
    foundry: FakeFoundryLocal,
) -> None:
    steps: list[LoadProgress] = []

    async def scenario() -> None:
        runtime = FoundryLocalRuntime(url=foundry.url, device="cpu")
        await runtime.start()
        loaded = await runtime.load(source(), steps.append)
        assert loaded.endpoint.base_url == f"{foundry.url}/v1"
        assert loaded.endpoint.model == CPU_ID
        assert loaded.memory_bytes == 4800 * MiB
        assert await runtime.loaded() == ["phi-4-mini"]
        assert await runtime.memory_used() == 4800 * MiB
        text = await ask(loaded.endpoint.base_url, loaded.endpoint.model)
        assert text == reply_text("foundry-local", CPU_ID)
        await runtime.stop()

    asyncio.run(scenario())
    (body,) = foundry.downloads
    assert body["IgnorePipeReport"] is True
    assert body["model"]["Name"] == CPU_ID
    assert body["model"]["ProviderType"] == "AzureFoundryLocal"
    assert body["model"]["Uri"].startswith("azureml://")
    load = next(r for r in foundry.requests if r.path.startswith("/openai/load/"))
    assert load.path == f"/openai/load/{CPU_ID}"
    assert load.query == {"unload": "false"}  # the node does its own idle unloading
    downloading = [s for s in steps if s.message.startswith(f"downloading `{CPU_ID}`")]
    assert [s.fraction for s in downloading] == pytest.approx([0.009, 0.45, 0.702, 0.9])
    assert steps[-1].fraction == 1.0


def test_without_a_device_the_sdk_preference_picks_the_variant(foundry: FakeFoundryLocal) -> None:
    async def scenario() -> str:
        runtime = FoundryLocalRuntime(url=foundry.url)
        loaded = await runtime.load(source(), lambda _: None)
        await runtime.stop()
        return loaded.endpoint.model

    assert asyncio.run(scenario()) == CUDA_ID
    load = next(r for r in foundry.requests if r.path.startswith("/openai/load/"))
    assert load.query == {"unload": "false", "ep": "cuda"}


def test_an_alias_resolves_to_its_newest_version_and_a_cached_model_is_not_downloaded(
    foundry: FakeFoundryLocal,
) -> None:
    foundry.cached.append(QWEN_ID)

    async def scenario() -> str:
        runtime = FoundryLocalRuntime(url=foundry.url)
        loaded = await runtime.load(source("qwen2.5-0.5b", "qwen"), lambda _: None)
        await runtime.stop()
        return loaded.endpoint.model

    assert asyncio.run(scenario()) == QWEN_ID
    assert foundry.downloads == []


def test_unload_forces_the_model_out(foundry: FakeFoundryLocal) -> None:
    async def scenario() -> None:
        runtime = FoundryLocalRuntime(url=foundry.url, device="CPU")
        await runtime.load(source(), lambda _: None)
        await runtime.unload("phi-4-mini")
        assert foundry.loaded == []
        assert await runtime.loaded() == []
        with pytest.raises(NotFound):
            runtime.endpoint("phi-4-mini")
        await runtime.stop()

    asyncio.run(scenario())
    unload = next(r for r in foundry.requests if r.path.startswith("/openai/unload/"))
    assert (unload.path, unload.query) == (f"/openai/unload/{CPU_ID}", {"force": "true"})


def test_a_model_the_catalog_lacks_names_the_command_that_lists_models(
    foundry: FakeFoundryLocal,
) -> None:
    async def scenario() -> None:
        runtime = FoundryLocalRuntime(url=foundry.url)
        with pytest.raises(ModelLoadError, match="no model `llama-9000`") as caught:
            await runtime.load(source("llama-9000"), lambda _: None)
        assert "foundry model list" in str(caught.value)
        await runtime.stop()

    asyncio.run(scenario())


def test_a_failed_download_carries_the_services_error(foundry: FakeFoundryLocal) -> None:
    foundry.fail_download = "disk full"

    async def scenario() -> None:
        runtime = FoundryLocalRuntime(url=foundry.url, device="CPU")
        with pytest.raises(ModelLoadError, match="could not download") as caught:
            await runtime.load(source(), lambda _: None)
        assert "disk full" in str(caught.value)
        assert f"foundry model download {CPU_ID}" in str(caught.value)
        await runtime.stop()

    asyncio.run(scenario())
    assert foundry.loaded == []


def test_the_service_is_found_with_the_cli_and_found_again_after_it_moves(
    foundry: FakeFoundryLocal, tmp_path: Path
) -> None:
    cli = write_foundry_cli(tmp_path, foundry.url)

    async def scenario() -> None:
        runtime = FoundryLocalRuntime(cli=str(cli), device="CPU")
        await runtime.start()
        health = await runtime.health()
        assert health.available
        assert health.detail == (
            f"Foundry Local at {foundry.url} (models in /var/lib/foundry/models)"
        )
        # The service restarts on another port: the CLI reports the new one.
        with FakeFoundryLocal(foundry.catalog, cached=[CPU_ID]) as moved:
            foundry.stop()
            write_foundry_cli(tmp_path, moved.url)
            loaded = await runtime.load(source(), lambda _: None)
            assert loaded.endpoint.base_url == f"{moved.url}/v1"
            assert moved.loaded == [CPU_ID]
            await runtime.stop()

    asyncio.run(scenario())


def test_a_missing_cli_says_how_to_install_or_configure(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = FoundryLocalRuntime(cli=str(tmp_path / "no-foundry-here"))
        with pytest.raises(RuntimeUnavailable, match="install Foundry Local") as caught:
            await runtime.start()
        assert "runtimes: foundry-local:" in str(caught.value)
        health = await runtime.health()
        assert not health.available
        await runtime.stop()

    asyncio.run(scenario())


def test_a_per_model_url_is_refused_with_where_it_belongs(foundry: FakeFoundryLocal) -> None:
    async def scenario() -> None:
        runtime = FoundryLocalRuntime(url=foundry.url)
        with_url = ModelSource("phi", "foundry-local", "phi-4-mini", options={"url": foundry.url})
        with pytest.raises(ModelLoadError, match="runtimes: foundry-local:"):
            await runtime.load(with_url, lambda _: None)
        await runtime.stop()

    asyncio.run(scenario())


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="CPU, GPU or NPU"):
        FoundryLocalRuntime(device="TPU")
