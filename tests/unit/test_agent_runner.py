"""AgentRunner against a scripted OpenAI-compatible server: what the model is sent and
what the caller sees, one request at a time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgefleet.v1 import common_pb2
from node_agent.agents.run_events import (
    RunEvent,
    RunFinished,
    TextDelta,
    ToolFinished,
    ToolRefused,
    ToolStarted,
)
from node_agent.agents.run_options import RunOptions
from node_agent.agents.runner import AgentRunner
from node_agent.errors import InvalidRequest, RuntimeUnavailable, ToolError
from node_agent.runtimes.base import ModelEndpoint
from node_agent.runtimes.llamacpp_compat import LlamaCppMessagePreparer
from node_agent.tools.base import ToolContext, ToolFunction
from node_agent.tools.clock import TimeTool
from tests.fakes.scripted_openai import Call, ScriptedOpenAI, Turn

T = TypeVar("T")

INSTRUCTIONS = "You answer questions about customer orders."
QUESTION = [{"role": "user", "content": "When does customer 42's order ship?"}]
CUSTOMER = {"id": 42, "name": "Ada", "ships": "09:30"}
NOW = {"datetime": "2030-05-06T09:00:00+02:00", "timezone": "Europe/Paris"}


def run(scenario: Coroutine[Any, Any, T]) -> T:
    """Run an async test scenario with a bound, so a hang fails instead of blocking."""
    return asyncio.run(asyncio.wait_for(scenario, 30))


class Functions:
    """A database-like, a time-like and a side-effecting function that record their calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _function(
        self,
        name: str,
        parameters: Mapping[str, Any],
        answer: Callable[[dict[str, Any]], Awaitable[str]],
        side_effects: bool = False,
    ) -> ToolFunction:
        async def call(arguments: dict[str, Any]) -> str:
            self.calls.append((name, arguments))
            return await answer(arguments)

        return ToolFunction(name, f"The {name} function.", parameters, side_effects, call)

    def lookup_customer(self) -> ToolFunction:
        async def answer(arguments: dict[str, Any]) -> str:
            if arguments["customer_id"] != CUSTOMER["id"]:
                raise ToolError(f"no customer {arguments['customer_id']}")
            return json.dumps(CUSTOMER)

        return self._function(
            "lookup_customer",
            {
                "type": "object",
                "properties": {"customer_id": {"type": "integer"}},
                "required": ["customer_id"],
                "additionalProperties": False,
            },
            answer,
        )

    def time_now(self) -> ToolFunction:
        async def answer(arguments: dict[str, Any]) -> str:
            return json.dumps(NOW)

        return self._function(
            "time_now",
            {"type": "object", "properties": {"timezone": {"type": "string"}}},
            answer,
        )

    def send_email(self, answer: Callable[[dict[str, Any]], Awaitable[str]]) -> ToolFunction:
        return self._function(
            "send_email",
            {"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]},
            answer,
            side_effects=True,
        )


def runner_for(
    server: ScriptedOpenAI,
    functions: Iterable[ToolFunction] = (),
    *,
    llamacpp: bool = True,
    max_tool_rounds: int = 5,
) -> AgentRunner:
    return AgentRunner(
        "support",
        INSTRUCTIONS,
        ModelEndpoint(server.base_url, server.model),
        list(functions),
        message_preparer=LlamaCppMessagePreparer() if llamacpp else None,
        max_tool_rounds=max_tool_rounds,
    )


async def collect(
    runner: AgentRunner,
    messages: list[dict[str, Any]] = QUESTION,
    options: RunOptions | None = None,
) -> list[RunEvent]:
    try:
        return [event async for event in runner.run(messages, options)]
    finally:
        await runner.close()


def kinds(events: list[RunEvent]) -> list[str]:
    """Event kinds in order; the text pieces of one stretch of reply count once."""
    found: list[str] = []
    for event in events:
        kind = type(event).__name__
        if not (kind == "TextDelta" and found and found[-1] == kind):
            found.append(kind)
    return found


def reply(events: list[RunEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def result_message(function: str, result: str) -> dict[str, str]:
    """A function result as the llama.cpp message preparer renders it."""
    return {"role": "user", "content": f"Result of tool `{function}`: {result}"}


# --- the tool-calling loop -------------------------------------------------------------------


def test_function_results_reach_the_model_as_the_runtime_preparer_renders_them() -> None:
    async def scenario() -> None:
        functions = Functions()
        script = [
            Turn(calls=[Call("lookup_customer", {"customer_id": 42})]),
            Turn(calls=[Call("time_now", {"timezone": "Europe/Paris"})]),
            Turn(text="Ada's order ships at 09:30, in half an hour."),
        ]
        async with ScriptedOpenAI(script) as server:
            runner = runner_for(server, [functions.lookup_customer(), functions.time_now()])
            events = await collect(runner)

        assert kinds(events) == [
            "ToolStarted", "ToolFinished",
            "ToolStarted", "ToolFinished",
            "TextDelta", "RunFinished",
        ]  # fmt: skip
        assert events[0] == ToolStarted("lookup_customer", "call_1", '{"customer_id":42}', False)
        assert events[1] == ToolFinished(
            "lookup_customer", "call_1", '{"customer_id":42}', False, json.dumps(CUSTOMER)
        )
        assert events[3] == ToolFinished(
            "time_now", "call_2", '{"timezone":"Europe/Paris"}', False, json.dumps(NOW)
        )
        assert reply(events) == "Ada's order ships at 09:30, in half an hour."
        assert events[-1] == RunFinished("stop", prompt_tokens=30, completion_tokens=15)
        assert functions.calls == [
            ("lookup_customer", {"customer_id": 42}),
            ("time_now", {"timezone": "Europe/Paris"}),
        ]

        first, second, third = server.requests
        assert first["model"] == "scripted-model"
        assert first["messages"] == [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": QUESTION[0]["content"]},
        ]
        assert [tool["function"]["name"] for tool in first["tools"]] == [
            "lookup_customer",
            "time_now",
        ]
        assert first["tools"][0]["function"]["parameters"]["required"] == ["customer_id"]
        # Every model call streamed, tools offered or not.
        assert all(request["stream"] is True for request in server.requests)

        # The follow-ups carry the call and its result in a shape llama.cpp renders:
        # the preparer ran on every request, not only the first.
        call_turn, result_turn = second["messages"][2:]
        assert call_turn["role"] == "assistant"
        assert call_turn["content"] == ""
        assert call_turn["tool_calls"][0]["id"] == "call_1"
        assert call_turn["tool_calls"][0]["function"]["name"] == "lookup_customer"
        assert result_turn == result_message("lookup_customer", json.dumps(CUSTOMER))
        assert third["messages"][2:4] == second["messages"][2:4]
        assert third["messages"][5] == result_message("time_now", json.dumps(NOW))
        assert all(m["role"] != "tool" for r in server.requests for m in r["messages"])

    run(scenario())


def test_without_a_preparer_results_go_back_as_tool_messages() -> None:
    async def scenario() -> None:
        functions = Functions()
        script = [Turn(calls=[Call("time_now", {})]), Turn(text="It is nine.")]
        async with ScriptedOpenAI(script) as server:
            await collect(runner_for(server, [functions.time_now()], llamacpp=False))

        call_turn, result_turn = server.requests[1]["messages"][2:]
        assert "content" not in call_turn  # the shape llama.cpp's templates cannot render
        assert result_turn == {"role": "tool", "tool_call_id": "call_1", "content": json.dumps(NOW)}

    run(scenario())


def test_the_real_time_tool_runs_with_a_named_tool_choice(tmp_path: Path) -> None:
    async def scenario() -> None:
        tool = TimeTool({"timezone": "Europe/Paris"}, ToolContext(data_dir=tmp_path, agent="a"))
        script = [Turn(calls=[Call("time_now", {})]), Turn(text="It is morning in Paris.")]
        async with ScriptedOpenAI(script) as server:
            events = await collect(
                runner_for(server, tool.functions()), options=RunOptions(tool_choice="time_now")
            )

        assert kinds(events) == ["ToolStarted", "ToolFinished", "TextDelta", "RunFinished"]
        finished = events[1]
        assert isinstance(finished, ToolFinished)
        now = json.loads(finished.result)
        assert now["timezone"] == "Europe/Paris"
        assert now["weekday"] in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                  "Saturday", "Sunday")  # fmt: skip

        forced, follow_up = server.requests
        assert forced["tool_choice"] == {"type": "function", "function": {"name": "time_now"}}
        # Once the forced call has run, the model is free to answer (else it loops).
        assert follow_up.get("tool_choice", "auto") == "auto"
        assert follow_up["messages"][-1] == result_message("time_now", finished.result)

    run(scenario())


def test_required_tool_choice_is_forced_once() -> None:
    async def scenario() -> None:
        functions = Functions()
        script = [Turn(calls=[Call("time_now", {})]), Turn(text="Nine o'clock.")]
        async with ScriptedOpenAI(script) as server:
            await collect(
                runner_for(server, [functions.time_now()]),
                options=RunOptions(tool_choice="required"),
            )

        assert server.requests[0]["tool_choice"] == "required"
        assert server.requests[1].get("tool_choice", "auto") == "auto"

    run(scenario())


def test_a_call_to_a_function_the_agent_lacks_is_refused_and_nothing_runs() -> None:
    async def scenario() -> None:
        functions = Functions()
        script = [
            Turn(calls=[Call("drop_tables", {"table": "customers"}), Call("time_now", {})]),
            Turn(text="I can only tell the time."),
        ]
        async with ScriptedOpenAI(script) as server:
            events = await collect(runner_for(server, [functions.time_now()]))

        assert functions.calls == [("time_now", {})]
        assert not any(isinstance(e, ToolStarted) and e.name == "drop_tables" for e in events)
        refused = [event for event in events if isinstance(event, ToolRefused)]
        assert len(refused) == 1
        assert refused[0].name == "drop_tables"
        assert refused[0].call_id == "call_1"
        assert refused[0].arguments_json == '{"table":"customers"}'
        assert "drop_tables" in refused[0].result
        assert refused[0].result.startswith("Error:")
        # Reported before the next model call, and the model is told.
        assert events.index(refused[0]) < kinds(events).index("TextDelta")
        assert result_message("drop_tables", refused[0].result) in server.requests[1]["messages"]
        assert [t["function"]["name"] for t in server.requests[0]["tools"]] == ["time_now"]

    run(scenario())


def test_a_refusal_is_reported_when_the_runtime_reuses_call_ids() -> None:
    async def scenario() -> None:
        functions = Functions()
        script = [
            Turn(calls=[Call("time_now", {}, id="call_0")]),
            Turn(calls=[Call("drop_tables", {}, id="call_0")]),
            Turn(text="Done."),
        ]
        async with ScriptedOpenAI(script) as server:
            events = await collect(runner_for(server, [functions.time_now()]))

        assert kinds(events) == [
            "ToolStarted", "ToolFinished", "ToolRefused", "TextDelta", "RunFinished",
        ]  # fmt: skip
        refused = events[2]
        assert isinstance(refused, ToolRefused)
        assert refused.name == "drop_tables"
        assert "drop_tables" in refused.result
        assert functions.calls == [("time_now", {})]

    run(scenario())


def test_arguments_the_schema_rejects_are_refused_before_anything_runs() -> None:
    async def scenario() -> None:
        functions = Functions()
        script = [
            Turn(calls=[Call("lookup_customer", {"customer_id": "forty-two"})]),
            Turn(calls=[Call("lookup_customer", '{"customer_id": 42')]),  # cut-off JSON
            Turn(text="Sorry."),
        ]
        async with ScriptedOpenAI(script) as server:
            events = await collect(runner_for(server, [functions.lookup_customer()]))

        assert functions.calls == []
        assert kinds(events) == ["ToolRefused", "ToolRefused", "TextDelta", "RunFinished"]
        wrong_type, cut_off = events[0], events[1]
        assert isinstance(wrong_type, ToolRefused)
        assert isinstance(cut_off, ToolRefused)
        assert wrong_type.result == (
            "Error: invalid arguments for lookup_customer: argument `customer_id`: "
            "'forty-two' is not of type 'integer'"
        )
        assert cut_off.result.startswith("Error: invalid arguments for lookup_customer:")
        assert (
            result_message("lookup_customer", wrong_type.result) in server.requests[1]["messages"]
        )

    run(scenario())


def test_a_tool_error_is_the_result_the_model_reads_and_the_run_goes_on() -> None:
    async def scenario() -> None:
        functions = Functions()
        script = [
            Turn(calls=[Call("lookup_customer", {"customer_id": 7})]),
            Turn(text="There is no customer 7."),
        ]
        async with ScriptedOpenAI(script) as server:
            events = await collect(runner_for(server, [functions.lookup_customer()]))

        assert kinds(events) == ["ToolStarted", "ToolFinished", "TextDelta", "RunFinished"]
        finished = events[1]
        assert isinstance(finished, ToolFinished)
        assert finished.result == "Error: no customer 7"
        assert server.requests[1]["messages"][-1] == result_message(
            "lookup_customer", "Error: no customer 7"
        )
        assert reply(events) == "There is no customer 7."

    run(scenario())


def test_a_function_that_crashes_tells_the_model_little_and_the_run_goes_on() -> None:
    async def scenario() -> None:
        async def crash(arguments: dict[str, Any]) -> str:
            raise RuntimeError("secret connection string in this message")

        functions = Functions()
        script = [Turn(calls=[Call("send_email", {"to": "ada@example.com"})]), Turn(text="Oops.")]
        async with ScriptedOpenAI(script) as server:
            events = await collect(runner_for(server, [functions.send_email(crash)]))

        assert kinds(events) == ["ToolStarted", "ToolFinished", "TextDelta", "RunFinished"]
        finished = events[1]
        assert isinstance(finished, ToolFinished)
        assert finished.side_effects
        assert finished.result == "Error: the function failed unexpectedly."
        assert "secret" not in json.dumps(server.requests[1])

    run(scenario())


def test_the_caller_has_taken_tool_started_before_the_function_body_runs() -> None:
    async def scenario() -> None:
        taken: list[RunEvent] = []
        seen_at_start: list[list[str]] = []

        async def send(arguments: dict[str, Any]) -> str:
            seen_at_start.append(kinds(taken))
            return "sent"

        functions = Functions()
        script = [
            Turn(calls=[Call("send_email", {"to": "ada@example.com"})]),
            Turn(text="Sent."),
        ]
        async with ScriptedOpenAI(script) as server:
            runner = runner_for(server, [functions.send_email(send)])
            async for event in runner.run(QUESTION):
                if isinstance(event, ToolStarted):
                    await asyncio.sleep(0.05)  # a caller that takes its time to pass it on
                taken.append(event)
            await runner.close()

        assert seen_at_start == [["ToolStarted"]]
        assert taken[0] == ToolStarted("send_email", "call_1", '{"to":"ada@example.com"}', True)
        assert taken[1] == ToolFinished(
            "send_email", "call_1", '{"to":"ada@example.com"}', True, "sent"
        )

    run(scenario())


def test_tool_rounds_are_bounded_and_the_last_call_offers_no_tools() -> None:
    async def scenario() -> None:
        functions = Functions()
        script = [
            Turn(calls=[Call("time_now", {})]),
            Turn(calls=[Call("time_now", {})]),
            Turn(text="It is nine, as I said."),
        ]
        async with ScriptedOpenAI(script) as server:
            events = await collect(runner_for(server, [functions.time_now()], max_tool_rounds=2))

        assert len(functions.calls) == 2
        assert server.unused_turns == 0
        last = server.requests[-1]
        assert "tools" not in last
        assert "tool_choice" not in last
        assert last["stream"] is True  # no tools: safe to stream on every runtime
        assert reply(events) == "It is nine, as I said."
        assert kinds(events)[-1] == "RunFinished"

    run(scenario())


# --- streaming, options, errors ----------------------------------------------------------------


def test_text_arrives_while_the_model_is_still_generating() -> None:
    async def scenario() -> None:
        more = asyncio.Event()
        script = [Turn(text="Hello there, friend", hold_after_first_piece=more)]
        async with ScriptedOpenAI(script) as server:
            runner = runner_for(server)
            events = runner.run([{"role": "user", "content": "Hi"}])
            first = await anext(events)
            # The server has sent one text chunk (after the role chunk) and waits.
            assert first == TextDelta("Hello")
            assert server.chunks_sent == 2
            more.set()
            rest = [event async for event in events]
            await runner.close()

        assert rest == [
            TextDelta(" there,"),
            TextDelta(" friend"),
            RunFinished("stop", prompt_tokens=10, completion_tokens=5),
        ]
        assert server.requests[0]["stream"] is True
        assert "tools" not in server.requests[0]

    run(scenario())


def test_options_map_onto_the_request() -> None:
    async def scenario() -> None:
        functions = Functions()
        async with ScriptedOpenAI([Turn(text="Fine.")]) as server:
            options = RunOptions(
                max_tokens=64,
                temperature=0.2,
                top_p=0.9,
                stop=("END",),
                seed=7,
                user="user-1",
                tool_choice="none",
            )
            await collect(runner_for(server, [functions.time_now()]), options=options)

        request = server.requests[0]
        # `max_tokens`, which every OpenAI-compatible runtime reads (llama.cpp ignores
        # `max_completion_tokens`).
        assert request["max_tokens"] == 64
        assert "max_completion_tokens" not in request
        assert (request["temperature"], request["top_p"]) == (0.2, 0.9)
        assert (request["stop"], request["seed"], request["user"]) == (["END"], 7, "user-1")
        assert "tools" not in request
        assert "tool_choice" not in request

    run(scenario())


def test_options_from_a_grpc_request() -> None:
    options = common_pb2.GenerationOptions(
        max_tokens=64, temperature=0.7, stop=["END"], seed=0, user="u", tool_choice="time_now"
    )
    assert RunOptions.from_proto(options) == RunOptions(
        max_tokens=64,
        temperature=0.7,  # not the float32 0.699999988...
        top_p=None,
        stop=("END",),
        seed=0,  # set, so kept although zero
        user="u",
        tool_choice="time_now",
    )
    assert RunOptions.from_proto(common_pb2.GenerationOptions()) == RunOptions()


def test_usage_is_unknown_when_a_model_call_does_not_report_it() -> None:
    async def scenario() -> None:
        functions = Functions()
        script = [Turn(calls=[Call("time_now", {})]), Turn(text="Nine.", usage=None)]
        async with ScriptedOpenAI(script) as server:
            events = await collect(runner_for(server, [functions.time_now()]))

        assert events[-1] == RunFinished("stop", prompt_tokens=None, completion_tokens=None)

    run(scenario())


@pytest.mark.parametrize(
    "choice", ["drop_tables", "required"], ids=["unknown function", "no functions"]
)
def test_a_tool_choice_the_agent_cannot_honour_is_an_invalid_request(choice: str) -> None:
    async def scenario() -> None:
        functions = [Functions().time_now()] if choice != "required" else []
        async with ScriptedOpenAI([Turn(text="unused")]) as server:
            with pytest.raises(InvalidRequest, match="tool_choice"):
                await collect(runner_for(server, functions), options=RunOptions(tool_choice=choice))
        assert server.requests == []

    run(scenario())


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, RuntimeUnavailable), (503, RuntimeUnavailable), (400, InvalidRequest)],
)
def test_runtime_errors_are_node_errors_and_not_retried(
    status: int, error: type[Exception]
) -> None:
    async def scenario() -> None:
        async with ScriptedOpenAI([Turn(status=status), Turn(text="a retry")]) as server:
            with pytest.raises(error, match=f"HTTP {status}"):
                await collect(runner_for(server))
        assert len(server.requests) == 1

    run(scenario())


def test_an_unreachable_runtime_is_unavailable() -> None:
    async def scenario() -> None:
        async with ScriptedOpenAI([]) as server:
            pass  # closed: nothing listens on its port any more
        with pytest.raises(RuntimeUnavailable, match="cannot reach"):
            await collect(runner_for(server))

    run(scenario())


# --- cancellation ------------------------------------------------------------------------------


def test_cancelling_the_caller_closes_the_model_request_in_flight() -> None:
    async def scenario() -> None:
        functions = Functions()
        never = asyncio.Event()
        async with ScriptedOpenAI([Turn(text="late", hold=never)]) as server:
            runner = runner_for(server, [functions.time_now()])

            async def consume() -> None:
                async for _ in runner.run(QUESTION):
                    pass

            task = asyncio.create_task(consume())
            await server.wait_for_requests(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The run has stopped its model call before it let the cancellation through.
            await asyncio.wait_for(server.disconnected.wait(), 0.5)
            await runner.close()

    run(scenario())


def test_closing_the_events_mid_stream_closes_the_model_request() -> None:
    async def scenario() -> None:
        never = asyncio.Event()
        async with ScriptedOpenAI([Turn(text="one two", hold_after_first_piece=never)]) as server:
            runner = runner_for(server)
            events = runner.run(QUESTION)
            assert await anext(events) == TextDelta("one")
            await events.aclose()
            await asyncio.wait_for(server.disconnected.wait(), 0.5)
            await runner.close()

    run(scenario())


# --- requests and agents that are wrong ----------------------------------------------------------


def test_history_with_tool_turns_is_sent_as_the_runtime_renders_it() -> None:
    async def scenario() -> None:
        history: list[dict[str, Any]] = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What time is it?", "name": "ada"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "time_now", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "09:00"},
            {"role": "assistant", "content": [{"type": "text", "text": "Nine."}]},
            {"role": "user", "content": "Thanks"},
        ]
        async with ScriptedOpenAI([Turn(text="You're welcome.")]) as server:
            events = await collect(runner_for(server, [Functions().time_now()]), history)

        assert kinds(events) == ["TextDelta", "RunFinished"]  # old calls are not this run's
        sent = server.requests[0]["messages"]
        assert sent[0] == {"role": "system", "content": INSTRUCTIONS}
        assert sent[1] == {"role": "system", "content": "Be brief."}
        assert sent[2] == {"role": "user", "content": "What time is it?", "name": "ada"}
        assert sent[3]["content"] == ""
        assert sent[3]["tool_calls"][0]["id"] == "call_9"
        assert sent[4] == result_message("time_now", "09:00")
        assert sent[5:] == [
            {"role": "assistant", "content": "Nine."},
            {"role": "user", "content": "Thanks"},
        ]

    run(scenario())


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "at least one message"),
        ([{"role": "robot", "content": "hi"}], "unknown role 'robot'"),
        ([{"role": "tool", "content": "09:00"}], "tool_call_id"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "text"),
    ],
    ids=["empty", "role", "tool without call id", "image"],
)
def test_malformed_messages_are_invalid_requests(
    messages: list[dict[str, Any]], match: str
) -> None:
    async def scenario() -> None:
        async with ScriptedOpenAI([Turn(text="unused")]) as server:
            with pytest.raises(InvalidRequest, match=match):
                await collect(runner_for(server), messages)
        assert server.requests == []

    run(scenario())


def test_an_agent_with_clashing_or_broken_functions_is_not_built() -> None:
    endpoint = ModelEndpoint("http://127.0.0.1:9/v1", "m")
    functions = Functions()
    with pytest.raises(ValueError, match="two functions named 'time_now'"):
        AgentRunner("a", "", endpoint, [functions.time_now(), functions.time_now()])
    broken = ToolFunction("f", "", {"type": "nonsense"}, False, functions.time_now().call)
    with pytest.raises(ValueError, match="invalid parameters schema"):
        AgentRunner("a", "", endpoint, [broken])
    with pytest.raises(ValueError, match="at least 1"):
        AgentRunner("a", "", endpoint, [], max_tool_rounds=0)
