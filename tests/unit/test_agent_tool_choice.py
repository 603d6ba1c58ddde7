"""How an agent's model calls stream with tools offered, and how a demanded call is fitted
to what the runtime honours: against a scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

from node_agent.agents.run_events import RunEvent, RunFinished, TextDelta, ToolFinished, ToolStarted
from node_agent.agents.run_options import RunOptions
from node_agent.agents.runner import AgentRunner
from node_agent.runtimes.base import ModelEndpoint, ToolSupport
from node_agent.runtimes.llamacpp_compat import LlamaCppMessagePreparer
from node_agent.tools.base import ToolFunction
from tests.fakes.scripted_openai import Call, ScriptedOpenAI, Turn

T = TypeVar("T")

QUESTION = [{"role": "user", "content": "What time is it in Paris?"}]
NOW = {"datetime": "2030-05-06T09:00:00+02:00"}
LLAMA_CPP_WITHOUT_TOOLS = ToolSupport(
    native_calls=False, named_choice=False, message_preparer=LlamaCppMessagePreparer()
)


def run(scenario: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(scenario, 30))


def function(name: str, calls: list[dict[str, Any]]) -> ToolFunction:
    async def call(arguments: dict[str, Any]) -> str:
        calls.append(arguments)
        return json.dumps(NOW)

    parameters = {
        "type": "object",
        "properties": {"timezone": {"type": "string"}},
        "additionalProperties": False,
    }
    return ToolFunction(name, f"The {name} function.", parameters, False, call)


def runner(
    server: ScriptedOpenAI, functions: list[ToolFunction], support: ToolSupport
) -> AgentRunner:
    return AgentRunner(
        "clock",
        "Answer briefly.",
        ModelEndpoint(server.base_url, server.model),
        functions,
        tool_support=support,
    )


async def collect(agent: AgentRunner, options: RunOptions) -> list[RunEvent]:
    try:
        return [event async for event in agent.run(QUESTION, options)]
    finally:
        await agent.close()


def test_text_of_a_round_that_offers_tools_arrives_before_the_round_ends() -> None:
    async def scenario() -> None:
        more = asyncio.Event()
        calls: list[dict[str, Any]] = []
        script = [
            Turn(text="Let me look.", calls=[Call("time_now", {})], hold_after_first_piece=more),
            Turn(text="It is nine."),
        ]
        async with ScriptedOpenAI(script) as server:
            agent = runner(server, [function("time_now", calls)], ToolSupport())
            events = agent.run(QUESTION, RunOptions())
            first = await anext(events)
            # The model is still generating this round (tools offered) and holds.
            assert first == TextDelta("Let")
            assert calls == [], "nothing runs before the call is complete"
            more.set()
            rest = [event async for event in events]
            await agent.close()

        assert [type(e) for e in rest if not isinstance(e, TextDelta)] == [
            ToolStarted,
            ToolFinished,
            RunFinished,
        ]
        assert calls == [{}]
        assert server.requests[0]["tools"], "tools were offered in the streamed round"
        assert all(request["stream"] is True for request in server.requests)
        finished = rest[-1]
        assert finished == RunFinished("stop", prompt_tokens=20, completion_tokens=10)

    run(scenario())


def test_a_named_choice_is_offered_alone_and_required_where_names_are_not_taken() -> None:
    async def scenario() -> None:
        calls: list[dict[str, Any]] = []
        script = [Turn(calls=[Call("time_now", {"timezone": "Europe/Paris"})]), Turn(text="Nine.")]
        functions = [function("time_now", calls), function("time_utc", calls)]
        async with ScriptedOpenAI(script) as server:
            support = ToolSupport(native_calls=True, named_choice=False)
            events = await collect(
                runner(server, functions, support), RunOptions(tool_choice="time_now")
            )

        forced, follow_up = server.requests
        assert forced["tool_choice"] == "required"
        assert [tool["function"]["name"] for tool in forced["tools"]] == ["time_now"]
        assert follow_up.get("tool_choice", "auto") == "auto"
        assert len(follow_up["tools"]) == 2, "once the call ran, every function is offered again"
        assert calls == [{"timezone": "Europe/Paris"}]
        assert isinstance(events[-1], RunFinished)

    run(scenario())


def test_a_model_without_tools_gives_the_demanded_call_as_json_held_to_the_schema() -> None:
    async def scenario() -> None:
        calls: list[dict[str, Any]] = []
        reply = '{"name": "time_now", "arguments": {"timezone": "Europe/Paris"}}'
        script = [Turn(text=reply), Turn(text="It is nine in Paris.")]
        async with ScriptedOpenAI(script) as server:
            agent = runner(server, [function("time_now", calls)], LLAMA_CPP_WITHOUT_TOOLS)
            events = await collect(agent, RunOptions(tool_choice="time_now", max_tokens=40))

        forced, follow_up = server.requests
        assert "tools" not in forced
        assert "tool_choice" not in forced
        assert forced["max_tokens"] == 40
        schema = forced["response_format"]["json_schema"]["schema"]
        assert forced["response_format"]["type"] == "json_schema"
        assert schema["properties"]["name"] == {"const": "time_now"}
        assert schema["properties"]["arguments"]["properties"] == {"timezone": {"type": "string"}}
        assert calls == [{"timezone": "Europe/Paris"}]
        started = next(e for e in events if isinstance(e, ToolStarted))
        assert (started.name, started.arguments_json) == ("time_now", '{"timezone":"Europe/Paris"}')
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert text == "It is nine in Paris.", "the JSON of the call is not reply text"
        # The call and its result reach the model as turns a template without tools renders.
        call_turn, result_turn = follow_up["messages"][2:]
        assert call_turn["tool_calls"][0]["function"]["name"] == "time_now"
        assert result_turn["role"] == "user"
        assert result_turn["content"] == f"Result of tool `time_now`: {json.dumps(NOW)}"
        assert isinstance(events[-1], RunFinished)
        assert events[-1].prompt_tokens == 20

    run(scenario())


def test_required_without_tools_in_the_template_asks_for_any_of_the_functions() -> None:
    async def scenario() -> None:
        calls: list[dict[str, Any]] = []
        script = [Turn(text='{"name": "time_utc", "arguments": {}}'), Turn(text="Seven.")]
        functions = [function("time_now", calls), function("time_utc", calls)]
        async with ScriptedOpenAI(script) as server:
            agent = runner(server, functions, LLAMA_CPP_WITHOUT_TOOLS)
            events = await collect(agent, RunOptions(tool_choice="required"))

        schema = server.requests[0]["response_format"]["json_schema"]["schema"]
        assert [v["properties"]["name"]["const"] for v in schema["anyOf"]] == [
            "time_now",
            "time_utc",
        ]
        assert [e.name for e in events if isinstance(e, ToolStarted)] == ["time_utc"]
        assert "tools" in server.requests[1], "after the call, the loop goes on as usual"

    run(scenario())


def test_json_cut_off_before_it_is_a_call_is_the_reply() -> None:
    async def scenario() -> None:
        calls: list[dict[str, Any]] = []
        script = [Turn(text='{"name": "time_now", "argu', finish_reason="length")]
        async with ScriptedOpenAI(script) as server:
            agent = runner(server, [function("time_now", calls)], LLAMA_CPP_WITHOUT_TOOLS)
            events = await collect(agent, RunOptions(tool_choice="time_now", max_tokens=8))

        assert calls == []
        assert events == [
            TextDelta('{"name": "time_now", "argu'),
            RunFinished("length", prompt_tokens=10, completion_tokens=5),
        ]

    run(scenario())


def test_auto_on_a_model_without_tools_leaves_the_request_as_it_is() -> None:
    async def scenario() -> None:
        calls: list[dict[str, Any]] = []
        async with ScriptedOpenAI([Turn(text="It is late.")]) as server:
            agent = runner(server, [function("time_now", calls)], LLAMA_CPP_WITHOUT_TOOLS)
            await collect(agent, RunOptions())

        (request,) = server.requests
        assert request["tool_choice"] == "auto"
        assert "response_format" not in request

    run(scenario())
