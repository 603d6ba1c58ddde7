"""One agent request, run with Microsoft Agent Framework against a model runtime.

An `AgentRunner` is built once per hosted agent: its instructions, the model
endpoint its runtime serves, and the functions its manifest allows. `run` takes
an OpenAI-shaped conversation and yields `RunEvent`s as they happen: reply text,
each function call (reported before it runs), and how the request finished.

Agent Framework owns the tool-calling loop (`Agent` over
`OpenAIChatCompletionClient`, each function a `FunctionTool` with the tool's JSON
schema as its input model); this module adds what a node needs through the
framework's own extension points:

* middleware (`node_agent.agents.middleware`) reports text and function calls
  as they happen and refuses arguments a function's schema rejects;
* `FunctionInvocationConfiguration` bounds the tool rounds;
* the runtime's `message_preparer` rewrites every outgoing message, on every
  model call of the loop (the client applies it per message while building each
  request body).

The run's events and options live in `run_events` and `run_options`, which load
nothing of the framework; they are importable from here too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Final, cast

import openai
from agent_framework import (
    Agent,
    AgentResponse,
    ChatMiddleware,
    ChatOptions,
    FunctionMiddleware,
    Message,
)
from agent_framework.exceptions import ChatClientException
from agent_framework_openai import OpenAIChatCompletionClient

from node_agent.agents.agent_functions import AgentFunctions
from node_agent.agents.conversation import framework_messages
from node_agent.agents.middleware import FunctionCalls, ModelCalls
from node_agent.agents.run_events import (
    RunEvent,
    RunFinished,
    TextDelta,
    ToolFinished,
    ToolRefused,
    ToolStarted,
)
from node_agent.agents.run_options import RunOptions
from node_agent.agents.run_state import RunState
from node_agent.errors import InvalidRequest, NodeError, RuntimeUnavailable
from node_agent.runtimes.base import MessagePreparer, ModelEndpoint, ToolSupport
from node_agent.tools.base import ToolFunction

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_MAX_TOOL_ROUNDS",
    "DEFAULT_TIMEOUT_S",
    "STOP_GRACE_S",
    "AgentRunner",
    "RunEvent",
    "RunFinished",
    "RunOptions",
    "TextDelta",
    "ToolFinished",
    "ToolRefused",
    "ToolStarted",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_TOOL_ROUNDS: Final = 5
DEFAULT_TIMEOUT_S: Final = 300.0
"""Longest wait for one model call (a long generation on a slow box takes minutes)."""
CONNECT_TIMEOUT_S: Final = 5.0
STOP_GRACE_S: Final = 5.0
"""How long a cancelled run waits for its model call and function to stop."""

# Statuses that mean "this request is wrong" rather than "this runtime cannot serve now".
_REQUEST_ERRORS: Final = frozenset({400, 413, 422})


class AgentRunner:
    """Runs requests for one agent: its instructions, its model, and only its functions."""

    def __init__(
        self,
        name: str,
        instructions: str,
        endpoint: ModelEndpoint,
        functions: Sequence[ToolFunction],
        *,
        message_preparer: MessagePreparer | None = None,
        tool_support: ToolSupport | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Build the agent.

        `functions` are the agent's allowed functions (nothing else can run);
        `tool_support` says how the model takes tools (its message preparer, when given,
        wins over `message_preparer`);
        `max_tool_rounds` bounds the model calls that may ask for functions in one run;
        `timeout` bounds each model call, in seconds.
        Raises ValueError for duplicate function names, an invalid parameters schema,
        or fewer than one tool round.
        """
        if max_tool_rounds < 1:
            raise ValueError("max_tool_rounds must be at least 1")
        self.name = name
        self.endpoint = endpoint
        self._functions = AgentFunctions(name, functions)
        self._support = tool_support or ToolSupport(message_preparer=message_preparer)

        # The node and the gateway decide where to retry; a silent retry here would
        # also repeat a generation the caller already waited for.
        self._openai = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            max_retries=0,
            timeout=openai.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
            default_headers=None if endpoint.reuse_connections else {"connection": "close"},
        )
        client = OpenAIChatCompletionClient(
            model=endpoint.model,
            async_client=self._openai,
            message_preparer=self._support.message_preparer or message_preparer,
            function_invocation_configuration={
                "max_iterations": max_tool_rounds,
                # One call at a time, in the order the model asked: side effects do not
                # interleave, and events come in the order of the calls.
                "allow_concurrent_invocation": False,
            },
        )
        self._agent = Agent(
            client,
            instructions or None,
            name=name,
            tools=self._functions.framework_tools(),
        )

    async def close(self) -> None:
        """Release the HTTP connections to the runtime."""
        await self._openai.close()

    async def run(
        self, messages: Sequence[Mapping[str, Any]], options: RunOptions | None = None
    ) -> AsyncGenerator[RunEvent, None]:
        """Run one request: yields text, function calls and, last, RunFinished.

        `messages` is an OpenAI chat conversation (`role`, `content`, `name`,
        `tool_call_id`, `tool_calls`). Raises InvalidRequest for a malformed request
        or one the runtime rejects, RuntimeUnavailable when the runtime cannot answer.
        Closing the generator or cancelling its task stops the model call in flight.
        """
        history = framework_messages(messages)
        chat_options = self._chat_options(options or RunOptions())
        run = RunState(self._functions)
        # Events come from middleware deep inside the framework's loop. The loop runs in
        # its own task so each event reaches the caller when it happens, and a
        # ToolStarted can be held until the caller has taken it.
        task = asyncio.create_task(
            self._call_agent(history, chat_options, run), name=f"agent {self.name}"
        )
        task.add_done_callback(run.end)
        try:
            while (item := await run.next()) is not None:
                yield item.event
                if item.taken is not None:
                    item.taken.set_result(None)
            try:
                response = task.result()
            except ChatClientException as exc:
                raise _runtime_error(exc, self.endpoint) from exc
            usage = run.usage
            yield RunFinished(
                finish_reason=response.finish_reason or "stop",
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            )
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_GRACE_S)
                if not task.done():
                    log.warning(
                        "agent run still busy after cancellation (a function ignores it)",
                        extra={"agent": self.name},
                    )

    async def _call_agent(
        self, history: list[Message], chat_options: dict[str, Any], run: RunState
    ) -> AgentResponse[Any]:
        # The framework's non-streaming loop; `ModelCalls` streams every model call and
        # reports its text as it arrives.
        middleware: list[ChatMiddleware | FunctionMiddleware] = [
            ModelCalls(run, self._support),
            FunctionCalls(run),
        ]
        response: AgentResponse[Any] = await self._agent.run(
            history, options=cast("ChatOptions[None]", chat_options), middleware=middleware
        )
        return response

    def _chat_options(self, options: RunOptions) -> dict[str, Any]:
        chat: dict[str, Any] = {"tool_choice": self._tool_choice(options.tool_choice)}
        if options.max_tokens is not None:
            # The framework renames max_tokens to max_completion_tokens, which llama.cpp
            # and other OpenAI-compatible runtimes ignore; `max_tokens` is read by all.
            chat["extra_body"] = {"max_tokens": options.max_tokens}
        if options.temperature is not None:
            chat["temperature"] = options.temperature
        if options.top_p is not None:
            chat["top_p"] = options.top_p
        if options.stop:
            chat["stop"] = list(options.stop)
        if options.seed is not None:
            chat["seed"] = options.seed
        if options.user:
            chat["user"] = options.user
        return chat

    def _tool_choice(self, choice: str) -> str | dict[str, str]:
        if choice in ("", "auto"):
            return "auto"
        if choice == "none":
            return "none"
        if not self._functions:
            raise InvalidRequest(
                f"tool_choice {choice!r}: agent {self.name!r} has no functions to call"
            )
        if choice == "required":
            return "required"
        if choice not in self._functions:
            raise InvalidRequest(
                f"tool_choice {choice!r} is not a function agent {self.name!r} can call; "
                f"use auto, none, required or one of: {', '.join(self._functions)}"
            )
        # The framework sends this as {"type": "function", "function": {"name": ...}} and,
        # once the forced call has run, stops forcing it so the model can answer.
        return {"mode": "required", "required_function_name": choice}


def _runtime_error(exc: ChatClientException, endpoint: ModelEndpoint) -> NodeError:
    """The node error for a failed model call: the request's fault or the runtime's."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, openai.APIError):
        cause = cause.__cause__
    where = f"model runtime at {endpoint.base_url}"
    if isinstance(cause, openai.APIStatusError):
        if cause.status_code in _REQUEST_ERRORS:
            return InvalidRequest(
                f"the {where} rejected the request (HTTP {cause.status_code}): {cause.message}"
            )
        return RuntimeUnavailable(f"the {where} failed (HTTP {cause.status_code}): {cause.message}")
    if isinstance(cause, openai.APIConnectionError):
        return RuntimeUnavailable(f"cannot reach the {where}: {cause}")
    return RuntimeUnavailable(f"the {where} failed: {exc}")
