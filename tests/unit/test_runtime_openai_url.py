"""The plain OpenAI-URL adapter against a stand-in OpenAI-compatible endpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from node_agent.errors import ModelLoadError, NotFound
from node_agent.runtimes.base import ModelSource
from node_agent.runtimes.openai_url import OpenAIURLRuntime
from tests.fakes.openai_api import FakeOpenAIServer, reply_text

KEY = "sk-test-0123456789"


@pytest.fixture
def endpoint() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(["gpt-4o-mini", "gpt-4o"], api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_OPENAI_KEY", KEY)


def source(endpoint: FakeOpenAIServer, model: str = "gpt-4o-mini", **options: str) -> ModelSource:
    opts = {"url": f"{endpoint.url}/v1", "api_key_env": "EDGE_TEST_OPENAI_KEY", **options}
    return ModelSource(alias="cloud", runtime="openai", source=model, options=opts)


async def ask(base_url: str, model: str, api_key: str, stream: bool) -> str:
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


def test_load_checks_the_endpoint_and_hands_out_url_model_and_key(
    endpoint: FakeOpenAIServer,
) -> None:
    async def scenario() -> None:
        runtime = OpenAIURLRuntime()
        await runtime.start()
        loaded = await runtime.load(source(endpoint), lambda _: None)
        assert loaded.endpoint.base_url == f"{endpoint.url}/v1"
        assert loaded.endpoint.model == "gpt-4o-mini"
        assert loaded.endpoint.api_key == KEY
        assert await runtime.loaded() == ["cloud"]
        assert await runtime.memory_used() == 0
        for stream in (False, True):
            text = await ask(loaded.endpoint.base_url, "gpt-4o-mini", KEY, stream)
            assert text == reply_text("openai", "gpt-4o-mini")
        await runtime.unload("cloud")
        assert await runtime.loaded() == []
        with pytest.raises(NotFound):
            runtime.endpoint("cloud")
        await runtime.stop()

    asyncio.run(scenario())
    models_call = endpoint.requests[0]
    assert (models_call.method, models_call.path) == ("GET", "/v1/models")
    assert models_call.headers["authorization"] == f"Bearer {KEY}"


def test_the_key_is_never_logged(
    endpoint: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        runtime = OpenAIURLRuntime()
        with caplog.at_level(logging.DEBUG):
            await runtime.load(source(endpoint, "not-listed"), lambda _: None)
            await runtime.health()
        await runtime.stop()

    asyncio.run(scenario())
    assert any("not listed" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in str(record.__dict__)


def test_a_wrong_or_missing_key_says_what_to_fix(
    endpoint: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        runtime = OpenAIURLRuntime()
        monkeypatch.setenv("EDGE_TEST_OPENAI_KEY", "sk-wrong")
        with pytest.raises(ModelLoadError, match="refused this node's API key") as caught:
            await runtime.load(source(endpoint), lambda _: None)
        assert "sk-wrong" not in str(caught.value)
        monkeypatch.delenv("EDGE_TEST_OPENAI_KEY")
        with pytest.raises(ModelLoadError, match=r"`EDGE_TEST_OPENAI_KEY`.*not set"):
            await runtime.load(source(endpoint), lambda _: None)
        await runtime.stop()

    asyncio.run(scenario())


def test_without_a_url_the_error_shows_the_catalog_line() -> None:
    async def scenario() -> None:
        runtime = OpenAIURLRuntime()
        bare = ModelSource(alias="cloud", runtime="openai", source="gpt-4o-mini")
        with pytest.raises(ModelLoadError, match="no URL is set") as caught:
            await runtime.load(bare, lambda _: None)
        assert "url: https://HOST/v1" in str(caught.value)
        await runtime.stop()

    asyncio.run(scenario())


def test_a_url_as_source_uses_the_alias_as_model_name() -> None:
    with FakeOpenAIServer(["cloud"]) as open_endpoint:

        async def scenario() -> None:
            runtime = OpenAIURLRuntime()
            as_url = ModelSource(alias="cloud", runtime="openai", source=f"{open_endpoint.url}/v1/")
            loaded = await runtime.load(as_url, lambda _: None)
            assert loaded.endpoint.base_url == f"{open_endpoint.url}/v1"
            assert loaded.endpoint.model == "cloud"
            await runtime.stop()

        asyncio.run(scenario())


def test_health_follows_the_urls_in_use(endpoint: FakeOpenAIServer) -> None:
    async def scenario() -> None:
        runtime = OpenAIURLRuntime()
        idle = await runtime.health()
        assert idle.available
        await runtime.load(source(endpoint), lambda _: None)
        assert (await runtime.health()).available
        endpoint.stop()
        down = await runtime.health()
        assert not down.available
        assert "does not answer" in down.detail
        await runtime.stop()

    asyncio.run(scenario())
