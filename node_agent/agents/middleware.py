"""The middleware a run adds to Agent Framework's tool-calling loop.

* Chat middleware, run around every model call, streams it, reports its text as
  it arrives, reports the calls the framework refused, and fits a demanded call to
  what the runtime honours (`forced_calls`).
* Function middleware, run around every call of an agent's function, refuses
  arguments the schema rejects and reports each call before its body runs,
  holding it until the caller has taken that report.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from agent_framework import (
    ChatContext,
    ChatMiddleware,
    ChatResponse,
    Content,
    FunctionInvocationContext,
    FunctionMiddleware,
    ResponseStream,
)
from pydantic import BaseModel

from node_agent.agents import forced_calls
from node_agent.agents.agent_functions import arguments_json
from node_agent.agents.forced_calls import call_from_reply
from node_agent.agents.run_events import TextDelta, ToolFinished, ToolRefused, ToolStarted
from node_agent.agents.run_state import RunState, call_key
from node_agent.runtimes.base import ToolSupport

log = logging.getLogger(__name__)

FUNCTION_FAILED: Final = "Error: the function failed unexpectedly."


class ModelCalls(ChatMiddleware):
    """Chat middleware: the framework runs it around every model call of the loop."""

    def __init__(self, run: RunState, support: ToolSupport) -> None:
        self._run = run
        self._support = support

    async def process(self, context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
        """Stream the call, report its text as it comes, note its calls."""
        self._run.report_refusals(context.messages)
        options = dict(context.options or {})  # the loop's own dict: never change it in place
        if _forbids_tools(options.get("tool_choice")):
            # The model may not call a function: offering none costs no prompt tokens
            # (this is also the loop's last call when the tool rounds are used up).
            options.pop("tools", None)
        as_json = self._fit_tool_choice(options)
        context.options = options
        # Every call streams, tools offered or not: text reaches the caller token by token
        # in every round. A tool call streams in pieces too; the framework assembles it
        # and runs it only once the call is complete.
        context.stream = True
        await call_next()
        result = context.result
        if isinstance(result, ResponseStream):
            async with result:
                async for update in result:
                    for text in [] if as_json else _texts(update.contents):
                        self._run.emit(TextDelta(text))
                response: ChatResponse[Any] = await result.get_final_response()
        elif isinstance(result, ChatResponse):
            response = result
            text = "".join(_texts(c for m in response.messages for c in m.contents))
            if text and not as_json:
                self._run.emit(TextDelta(text))
        else:
            raise TypeError(f"model call returned {type(result).__name__}, not a chat response")
        if as_json:
            response = call_from_reply(response, as_json)
            # Not a call after all (cut off by max_tokens): what the model said is the reply.
            text = "".join(_texts(c for m in response.messages for c in m.contents))
            if text:
                self._run.emit(TextDelta(text))
        context.result = response
        self._run.usage.add(response)
        self._run.note_calls(response)

    def _fit_tool_choice(self, options: dict[str, Any]) -> list[str]:
        """Rewrite a demanded call into what the runtime honours; the functions whose call is
        asked for as JSON (empty when the runtime's own tool calling serves)."""
        must, name = forced_calls.demanded(options.get("tool_choice"))
        if not must or not options.get("tools"):
            return []
        names = [name] if name else forced_calls.offered_names(options["tools"])
        if not self._support.native_calls:
            names = [n for n in names if n in self._run.functions]
            if names:
                forced_calls.ask_for_json(options, self._run.functions, names)
            return names
        if name and not self._support.named_choice:
            forced_calls.only_named(options, name)
        return []


class FunctionCalls(FunctionMiddleware):
    """Function middleware: the framework runs it around every call of an agent's function,
    which is the one place a call can be reported before its body runs."""

    def __init__(self, run: RunState) -> None:
        self._run = run

    async def process(
        self, context: FunctionInvocationContext, call_next: Callable[[], Awaitable[None]]
    ) -> None:
        """Refuse arguments the schema rejects; else report the call, run it, report the result."""
        run = self._run
        function = run.functions[context.function.name]
        call_id = str(context.metadata.get("call_id", ""))
        run.handled.add(call_key(context.metadata.get("function_call_occurrence_id"), call_id))
        arguments = _plain(context.arguments)
        reported_arguments = arguments_json(arguments)

        problem = run.functions.argument_problem(function.name, arguments)
        if problem is not None:
            context.result = problem  # not calling call_next: nothing runs
            run.emit(ToolRefused(function.name, call_id, reported_arguments, problem))
            return

        await run.emit_and_wait(
            ToolStarted(function.name, call_id, reported_arguments, function.side_effects)
        )
        try:
            await call_next()
            result = _text_of_result(context.result)
        except Exception:
            # A tool from another package may raise anything; the model gets a short error
            # and the details go to the log, not to the model.
            log.exception("function failed", extra={"function": function.name, "call_id": call_id})
            result = FUNCTION_FAILED
            context.result = result
        run.emit(
            ToolFinished(function.name, call_id, reported_arguments, function.side_effects, result)
        )


def _texts(contents: Any) -> list[str]:
    return [c.text for c in contents if c.type == "text" and c.text]


def _text_of_result(result: object) -> str:
    """What the model reads for a function result (a list of content items, once run)."""
    if isinstance(result, str):
        return result
    if isinstance(result, list):
        return "\n".join(item.text or "" for item in result if isinstance(item, Content))
    return str(result)


def _plain(arguments: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    return arguments.model_dump() if isinstance(arguments, BaseModel) else dict(arguments)


def _forbids_tools(choice: object) -> bool:
    return choice == "none" or (isinstance(choice, Mapping) and choice.get("mode") == "none")
