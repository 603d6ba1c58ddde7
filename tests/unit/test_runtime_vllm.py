"""The vLLM adapter against a stand-in that speaks vLLM's documented OpenAI-compatible API."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest
from openai import AsyncOpenAI

from node_agent.errors import ModelLoadError, NotFound
from node_agent.runtimes.base import ModelSource
from node_agent.runtimes.vllm import VLLMRuntime
from tests.fakes.openai_api import reply_text
from tests.fakes.vllm import FakeVLLM

MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def vllm() -> Iterator[FakeVLLM]:
    with FakeVLLM(MODEL) as server:
        yield server


def source(name: str = MODEL, **options: str) -> ModelSource:
    return ModelSource(alias="qwen", runtime="vllm", source=name, options=options)


async def ask(base_url: str, model: str, api_key: str) -> str:
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)
    answer = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
    )
    return answer.choices[0].message.content or ""


def test_load_attaches_to_the_server_that_serves_the_model(vllm: FakeVLLM) -> None:
    async def scenario() -> None:
        runtime = VLLMRuntime(url=vllm.url)
        await runtime.start()
        loaded = await runtime.load(source(), lambda _: None)
        assert loaded.endpoint.base_url == f"{vllm.url}/v1"
        assert loaded.endpoint.model == MODEL
        assert loaded.memory_bytes == 0  # vLLM does not say
        assert await runtime.loaded() == ["qwen"]
        text = await ask(loaded.endpoint.base_url, loaded.endpoint.model, loaded.endpoint.api_key)
        assert text == reply_text("vllm", MODEL)
        await runtime.stop()

    asyncio.run(scenario())
    assert vllm.paths("GET")[:2] == ["/health", "/v1/models"]


def test_the_model_may_be_named_by_what_the_server_was_started_with() -> None:
    with FakeVLLM(MODEL, served_name="qwen-small") as vllm:

        async def scenario() -> str:
            runtime = VLLMRuntime(url=vllm.url)
            loaded = await runtime.load(source(MODEL), lambda _: None)
            await runtime.stop()
            return loaded.endpoint.model

        assert asyncio.run(scenario()) == "qwen-small"


def test_another_model_needs_another_server(vllm: FakeVLLM) -> None:
    async def scenario() -> None:
        runtime = VLLMRuntime(url=vllm.url)
        with pytest.raises(ModelLoadError, match="serves one model") as caught:
            await runtime.load(source("meta-llama/Llama-3.2-1B-Instruct"), lambda _: None)
        message = str(caught.value)
        assert f"serves `{MODEL}`" in message
        assert "vllm serve meta-llama/Llama-3.2-1B-Instruct --port PORT" in message
        assert await runtime.loaded() == []
        await runtime.stop()

    asyncio.run(scenario())


def test_an_unhealthy_server_is_not_used(vllm: FakeVLLM) -> None:
    vllm.healthy = False

    async def scenario() -> None:
        runtime = VLLMRuntime(url=vllm.url)
        with pytest.raises(ModelLoadError, match="not healthy"):
            await runtime.load(source(), lambda _: None)
        assert not (await runtime.health()).available
        await runtime.stop()

    asyncio.run(scenario())


def test_the_api_key_comes_from_the_named_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeVLLM(MODEL, api_key="s3cret") as vllm:

        async def scenario() -> None:
            runtime = VLLMRuntime(url=vllm.url, api_key_env="VLLM_TEST_KEY")
            monkeypatch.delenv("VLLM_TEST_KEY", raising=False)
            with pytest.raises(ModelLoadError, match=r"`VLLM_TEST_KEY`.*not set"):
                await runtime.load(source(), lambda _: None)
            monkeypatch.setenv("VLLM_TEST_KEY", "wrong")
            with pytest.raises(ModelLoadError, match="refused this node's API key"):
                await runtime.load(source(), lambda _: None)
            monkeypatch.setenv("VLLM_TEST_KEY", "s3cret")
            loaded = await runtime.load(source(), lambda _: None)
            assert loaded.endpoint.api_key == "s3cret"
            text = await ask(loaded.endpoint.base_url, loaded.endpoint.model, "s3cret")
            assert text == reply_text("vllm", MODEL)
            await runtime.stop()

        asyncio.run(scenario())


def test_unload_cannot_free_memory_and_says_so(
    vllm: FakeVLLM, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        runtime = VLLMRuntime(url=vllm.url)
        await runtime.load(source(), lambda _: None)
        with caplog.at_level(logging.INFO, logger="node_agent.runtimes.vllm"):
            await runtime.unload("qwen")
        assert await runtime.loaded() == []
        with pytest.raises(NotFound):
            runtime.endpoint("qwen")
        await runtime.stop()

    asyncio.run(scenario())
    (record,) = [r for r in caplog.records if "cannot unload" in r.getMessage()]
    assert "only when its server stops" in record.getMessage()
    assert vllm.paths("POST") == []  # nothing was asked of the server


def test_health_reports_the_version_or_what_to_start(vllm: FakeVLLM) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]

    async def scenario() -> None:
        up = VLLMRuntime(url=vllm.url)
        health = await up.health()
        assert health.available
        assert health.detail == f"healthy: {vllm.url} (vLLM 0.8.5)"
        down = VLLMRuntime(url=f"http://127.0.0.1:{closed}")
        health = await down.health()
        assert not health.available
        assert "vllm serve MODEL" in health.detail
        await up.stop()
        await down.stop()

    asyncio.run(scenario())
