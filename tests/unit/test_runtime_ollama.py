"""The Ollama adapter against a stand-in that speaks Ollama's documented REST API."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from node_agent.errors import ModelLoadError, NotFound
from node_agent.runtimes.base import LoadProgress, ModelSource
from node_agent.runtimes.ollama import OllamaRuntime, full_tag
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai_api import reply_text

TAG = "phi4-mini:3.8b-q4_K_M"
SIZE = 2_500_000_000


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(library={TAG: SIZE, "smollm2:135m": 270_000_000}) as server:
        yield server


def source(tag: str = TAG, alias: str = "phi-4-mini", **options: str) -> ModelSource:
    return ModelSource(alias=alias, runtime="ollama", source=tag, options=options)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def chat(base_url: str, model: str, api_key: str, stream: bool = False) -> str:
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    if not stream:
        answer = await client.chat.completions.create(model=model, messages=messages)
        return answer.choices[0].message.content or ""
    parts = []
    async for chunk in await client.chat.completions.create(
        model=model,
        messages=messages,
        stream=True,
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


def test_full_tag_adds_latest_only_when_the_tag_is_missing() -> None:
    assert full_tag("llama3.2") == "llama3.2:latest"
    assert full_tag("phi4-mini:3.8b") == "phi4-mini:3.8b"
    assert full_tag("registry.local:5000/team/model") == "registry.local:5000/team/model:latest"


def test_load_pulls_a_missing_model_with_progress_then_serves_it(ollama: FakeOllama) -> None:
    steps: list[LoadProgress] = []

    async def scenario() -> None:
        runtime = OllamaRuntime(url=ollama.url)
        await runtime.start()
        loaded = await runtime.load(source(), steps.append)
        assert loaded.endpoint.base_url == f"{ollama.url}/v1"
        assert loaded.endpoint.model == TAG
        assert loaded.memory_bytes == SIZE
        assert await runtime.loaded() == ["phi-4-mini"]
        assert await runtime.memory_used() == SIZE
        text = await chat(loaded.endpoint.base_url, loaded.endpoint.model, loaded.endpoint.api_key)
        assert text == reply_text("ollama", TAG)
        streamed = await chat(
            loaded.endpoint.base_url, loaded.endpoint.model, loaded.endpoint.api_key, stream=True
        )
        assert streamed == reply_text("ollama", TAG)
        await runtime.stop()

    asyncio.run(scenario())
    assert ollama.paths("POST")[:2] == ["/api/pull", "/api/chat"]
    assert ollama.keep_alive[TAG] == -1  # the node, not Ollama, decides when to unload
    fractions = [s.fraction for s in steps if s.fraction is not None]
    assert fractions == sorted(fractions), "progress must not go backwards"
    assert fractions[-1] == 1.0
    pulled = [s for s in steps if s.message.startswith(f"pulling `{TAG}`")]
    assert any(0 < (s.fraction or 0) < 0.9 for s in pulled), "byte progress of the layers"


def test_load_skips_the_pull_when_ollama_has_the_model(ollama: FakeOllama) -> None:
    ollama.on_disk[TAG] = SIZE

    async def scenario() -> None:
        runtime = OllamaRuntime(url=ollama.url)
        await runtime.load(source(), lambda _: None)
        await runtime.stop()

    asyncio.run(scenario())
    assert "/api/pull" not in ollama.paths()


def test_unload_frees_the_model_with_keep_alive_zero(ollama: FakeOllama) -> None:
    async def scenario() -> None:
        runtime = OllamaRuntime(url=ollama.url)
        await runtime.load(source(), lambda _: None)
        assert TAG in ollama.running
        await runtime.unload("phi-4-mini")
        assert TAG not in ollama.running
        assert await runtime.loaded() == []
        with pytest.raises(NotFound):
            runtime.endpoint("phi-4-mini")
        await runtime.unload("phi-4-mini")  # a second unload is a no-op
        await runtime.stop()

    asyncio.run(scenario())
    unloads = [r.json() for r in ollama.requests if r.path == "/api/chat"][-1]
    assert unloads == {"model": TAG, "messages": [], "keep_alive": 0, "stream": False}


def test_a_tag_the_registry_does_not_have_fails_with_ollamas_error(ollama: FakeOllama) -> None:
    async def scenario() -> None:
        runtime = OllamaRuntime(url=ollama.url)
        with pytest.raises(ModelLoadError, match="could not pull `nosuch:7b`") as caught:
            await runtime.load(source("nosuch:7b"), lambda _: None)
        assert "file does not exist" in str(caught.value)
        assert await runtime.loaded() == []
        await runtime.stop()

    asyncio.run(scenario())


def test_a_model_url_option_overrides_the_default_url(ollama: FakeOllama) -> None:
    async def scenario() -> None:
        runtime = OllamaRuntime(url=f"http://127.0.0.1:{closed_port()}")
        loaded = await runtime.load(source(url=ollama.url), lambda _: None)
        assert loaded.endpoint.base_url == f"{ollama.url}/v1"
        await runtime.stop()

    asyncio.run(scenario())
    assert "/api/chat" in ollama.paths()


def test_ollama_not_running_is_reported_with_what_to_do() -> None:
    url = f"http://127.0.0.1:{closed_port()}"

    async def scenario() -> None:
        runtime = OllamaRuntime(url=url)
        await runtime.start()
        health = await runtime.health()
        assert not health.available
        assert f"Ollama does not answer at {url}" in health.detail
        assert "ollama serve" in health.detail
        with pytest.raises(ModelLoadError, match="ollama serve"):
            await runtime.load(source(), lambda _: None)
        await runtime.stop()

    asyncio.run(scenario())


def test_health_reports_the_version(ollama: FakeOllama) -> None:
    async def scenario() -> None:
        runtime = OllamaRuntime(url=ollama.url)
        health = await runtime.health()
        await runtime.stop()
        assert health.available
        assert health.detail == f"Ollama 0.6.5 at {ollama.url}"

    asyncio.run(scenario())


def test_stop_unloads_what_the_node_loaded(ollama: FakeOllama) -> None:
    ollama.on_disk["other:1b"] = 1_000  # loaded by someone else: left alone

    async def scenario() -> None:
        runtime = OllamaRuntime(url=ollama.url)
        await runtime.load(source(), lambda _: None)
        ollama.running["other:1b"] = 1_000
        await runtime.stop()

    asyncio.run(scenario())
    assert ollama.running == {"other:1b": 1_000}


def test_when_ollama_goes_away_nothing_is_loaded_and_memory_is_unknown(
    ollama: FakeOllama,
) -> None:
    async def scenario() -> None:
        runtime = OllamaRuntime(url=ollama.url)
        await runtime.load(source(), lambda _: None)
        ollama.stop()
        assert await runtime.loaded() == []
        assert await runtime.memory_used() == 0
        assert not (await runtime.health()).available
        await runtime.stop()  # the unload fails; stopping still completes

    asyncio.run(scenario())
