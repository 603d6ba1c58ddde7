"""One agent request, run with Microsoft Agent Framework against a model runtime.

An `AgentRunner` is built once per hosted agent: its instructions, the model
endpoint its runtime serves, and the functions its manifest allows. `run` takes
an OpenAI-shaped conversation and yields `RunEvent`s as they happen: reply text,
each function call (reported before it runs), and how the request finished.

Agent Framework owns the tool-calling loop (`Agent` over
`OpenAIChatCompletionClient`, each function a `FunctionTool` with the tool's JSON
schema as its input model); this module adds what a node needs through the
framework's own extension points:

* function middleware, run around every call of an agent's function, refuses
  arguments the schema rejects and reports each call before its body runs,
  holding it until the caller has taken that report;
* chat middleware, run around every model call, decides whether that call is
  streamed, reports its text, and reports the calls the framework refused;
* `FunctionInvocationConfiguration` bounds the tool rounds;
* the runtime's `message_preparer` rewrites every outgoing message, on every
  model call of the loop (the client applies it per message while building each
  request body).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import jsonschema
import openai
from agent_framework import (
    Agent,
    AgentResponse,
    ChatContext,
    ChatMiddleware,
    ChatOptions,
    ChatResponse,
    Content,
    FunctionInvocationContext,
    FunctionMiddleware,
    FunctionTool,
    Message,
    ResponseStream,
)
from agent_framework.exceptions import ChatClientException
from agent_framework_openai import OpenAIChatCompletionClient
from pydantic import BaseModel

from edgefleet.v1 import common_pb2
from node_agent.errors import InvalidRequest, NodeError, RuntimeUnavailable, ToolError
from node_agent.runtimes.base import MessagePreparer, ModelEndpoint
from node_agent.tools.base import ToolFunction

log = logging.getLogger(__name__)

DEFAULT_MAX_TOOL_ROUNDS: Final = 5
DEFAULT_TIMEOUT_S: Final = 300.0
"""Longest wait for one model call. A turn that offers tools is not streamed, so the
whole generation happens before the first byte; slow boxes need minutes."""
CONNECT_TIMEOUT_S: Final = 5.0
STOP_GRACE_S: Final = 5.0
"""How long a cancelled run waits for its model call and function to stop."""
_MAX_ERROR_CHARS: Final = 300
_FUNCTION_FAILED: Final = "Error: the function failed unexpectedly."

# Statuses that mean "this request is wrong" rather than "this runtime cannot serve now".
_REQUEST_ERRORS: Final = frozenset({400, 413, 422})


# --- what a run reports --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the reply text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """A function is about to run.

    The caller has taken this event (asked for the next one) before the function body
    starts, so a caller that loses the node afterwards knows a side effect may have
    happened.
    """

    name: str
    call_id: str
    arguments_json: str
    side_effects: bool


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """A function ran; `result` is what the model was told (a ToolError's text included)."""

    name: str
    call_id: str
    arguments_json: str
    side_effects: bool
    result: str


@dataclass(frozen=True, slots=True)
class ToolRefused:
    """A call the model made that did not run: a function the agent may not call, or
    arguments its schema rejects. `result` is what the model was told.

    A call to an unknown function is reported once the framework has answered it, after
    the other calls of the same model turn and before the next model call.
    """

    name: str
    call_id: str
    arguments_json: str
    result: str


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The last event of a run. Token counts are totals over every model call of the run,
    None when a call did not report them."""

    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None


RunEvent = TextDelta | ToolStarted | ToolFinished | ToolRefused | RunFinished


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Sampling options of one request; None or empty means the runtime's default."""

    max_tokens: int | None = None
    """Per model call (each tool round is one)."""
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    user: str = ""
    tool_choice: str = ""
    """Empty or `auto`, `none`, `required`, or the name of one of the agent's functions."""

    @classmethod
    def from_proto(cls, options: common_pb2.GenerationOptions) -> RunOptions:
        """The options of a gRPC request, where zero values mean "the runtime's default"."""
        return cls(
            max_tokens=options.max_tokens or None,
            temperature=float32(options.temperature) if options.HasField("temperature") else None,
            top_p=float32(options.top_p) if options.HasField("top_p") else None,
            stop=tuple(options.stop),
            seed=options.seed if options.HasField("seed") else None,
            user=options.user,
            tool_choice=options.tool_choice,
        )


def float32(value: float) -> float:
    """The number a caller wrote, from the nearest float32 a proto `float` carries.

    0.7 arrives as 0.699999988; without this the node would send, compare, save and
    log that.
    """
    return float(f"{value:.7g}")


# --- the runner ----------------------------------------------------------------------------


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
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Build the agent.

        `functions` are the agent's allowed functions (nothing else can run);
        `max_tool_rounds` bounds the model calls that may ask for functions in one run;
        `timeout` bounds each model call, in seconds.
        Raises ValueError for duplicate function names, an invalid parameters schema,
        or fewer than one tool round.
        """
        if max_tool_rounds < 1:
            raise ValueError("max_tool_rounds must be at least 1")
        self.name = name
        self.endpoint = endpoint
        self._functions: dict[str, ToolFunction] = {}
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        for function in functions:
            if function.name in self._functions:
                raise ValueError(f"agent {name!r} has two functions named {function.name!r}")
            try:
                jsonschema.Draft202012Validator.check_schema(function.parameters)
            except jsonschema.SchemaError as exc:
                raise ValueError(
                    f"function {function.name!r} has an invalid parameters schema: {exc.message}"
                ) from None
            self._functions[function.name] = function
            self._validators[function.name] = jsonschema.Draft202012Validator(function.parameters)

        # The node and the gateway decide where to retry; a silent retry here would
        # also repeat a generation the caller already waited for.
        self._openai = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key,
            max_retries=0,
            timeout=openai.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
        )
        client = OpenAIChatCompletionClient(
            model=endpoint.model,
            async_client=self._openai,
            message_preparer=message_preparer,
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
            tools=[_function_tool(function) for function in functions],
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
        history = _framework_messages(messages)
        chat_options = self._chat_options(options or RunOptions())
        run = _Run(self._functions, self._validators)
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
        self, history: list[Message], chat_options: dict[str, Any], run: _Run
    ) -> AgentResponse[Any]:
        # The framework's non-streaming loop; `_ModelCalls` streams the model calls that
        # can be streamed and reports their text as it arrives.
        middleware: list[ChatMiddleware | FunctionMiddleware] = [
            _ModelCalls(run),
            _FunctionCalls(run),
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


def _function_tool(function: ToolFunction) -> FunctionTool:
    """An Agent Framework function tool built from a name, a description and a JSON schema."""

    async def body(**arguments: Any) -> str:
        try:
            return await function.call(arguments)
        except ToolError as exc:
            # The tool explains a refusal or failure to the model, which reads it and
            # goes on; for the framework this is a result, not a crash to log.
            return f"Error: {exc}"

    return FunctionTool(
        name=function.name,
        description=function.description,
        func=body,
        input_model=dict(function.parameters),
    )


# --- one run ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    event: RunEvent
    taken: asyncio.Future[None] | None = None


@dataclass(slots=True)
class _Usage:
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0

    def add(self, response: ChatResponse[Any]) -> None:
        details = response.usage_details or {}
        prompt, completion = details.get("input_token_count"), details.get("output_token_count")
        # A call that does not report its tokens makes the total unknown, not smaller.
        self.prompt_tokens = (
            None if prompt is None or self.prompt_tokens is None else (self.prompt_tokens + prompt)
        )
        self.completion_tokens = (
            None
            if completion is None or self.completion_tokens is None
            else (self.completion_tokens + completion)
        )


@dataclass(slots=True)
class _Run:
    """What one request's middleware shares with the iterator that reports it."""

    functions: Mapping[str, ToolFunction]
    validators: Mapping[str, jsonschema.protocols.Validator]
    usage: _Usage = field(default_factory=_Usage)
    handled: set[str] = field(default_factory=set)
    """Calls the function middleware reported (started or refused), by `_call_key`."""
    calls: list[Content] = field(default_factory=list)
    """Calls the model made in this run that no event reported yet."""
    _items: asyncio.Queue[_Item | None] = field(default_factory=asyncio.Queue)

    def emit(self, event: RunEvent) -> None:
        self._items.put_nowait(_Item(event))

    async def emit_and_wait(self, event: RunEvent) -> None:
        """Report `event` and return once the caller has taken it."""
        taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._items.put_nowait(_Item(event, taken))
        await taken

    async def next(self) -> _Item | None:
        return await self._items.get()

    def end(self, _task: object) -> None:
        self._items.put_nowait(None)

    def note_calls(self, response: ChatResponse[Any]) -> None:
        self.calls.extend(
            content
            for message in response.messages
            for content in message.contents
            if content.type == "function_call"
        )

    def report_refusals(self, messages: Sequence[Message]) -> None:
        """Report the calls the framework answered without running anything.

        The framework answers a call to a function the agent does not have with an
        error result and never reaches function middleware; such calls are found here,
        before the next model call, by their result in the conversation.
        """
        if not self.calls:
            return
        results = {
            content.call_id: content
            for message in messages
            for content in message.contents
            if content.type == "function_result"
        }
        waiting: list[Content] = []
        for call in self.calls:
            # Read the ids now: the framework gives each call an occurrence id (and a call
            # id when the runtime left it empty) after this middleware noted the call.
            if _call_key(call.id, call.call_id) in self.handled:
                continue
            call_id = call.call_id or ""
            result = results.get(call_id)  # the latest: runtimes may reuse call ids
            if result is None:
                waiting.append(call)
                continue
            self.emit(
                ToolRefused(
                    name=call.name or "",
                    call_id=call_id,
                    arguments_json=_arguments_json(call.parse_arguments() or {}),
                    result=_text_of(result),
                )
            )
        self.calls = waiting


class _ModelCalls(ChatMiddleware):
    """Chat middleware: the framework runs it around every model call of the loop."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    async def process(self, context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
        """Stream the call when no tools are offered, report its text, note its calls."""
        self._run.report_refusals(context.messages)
        options = dict(context.options or {})  # the loop's own dict: never change it in place
        if _forbids_tools(options.get("tool_choice")):
            # The model may not call a function: offering none costs no prompt tokens and
            # lets the call stream on every runtime (this is also the loop's last call
            # when the tool rounds are used up).
            options.pop("tools", None)
        context.options = options
        # A call that offers tools is not streamed. llama.cpp answers a streamed request
        # with tools with an empty 200 in its function-calling chat format, and the loop
        # cannot act on a tool call before it is complete anyway; the reply text of such a
        # call arrives in one piece.
        context.stream = not options.get("tools")
        await call_next()
        result = context.result
        if isinstance(result, ResponseStream):
            async with result:
                async for update in result:
                    for text in _texts(update.contents):
                        self._run.emit(TextDelta(text))
                response: ChatResponse[Any] = await result.get_final_response()
            context.result = response
        elif isinstance(result, ChatResponse):
            response = result
            text = "".join(_texts(c for m in response.messages for c in m.contents))
            if text:
                self._run.emit(TextDelta(text))
        else:
            raise TypeError(f"model call returned {type(result).__name__}, not a chat response")
        self._run.usage.add(response)
        self._run.note_calls(response)


class _FunctionCalls(FunctionMiddleware):
    """Function middleware: the framework runs it around every call of an agent's function,
    which is the one place a call can be reported before its body runs."""

    def __init__(self, run: _Run) -> None:
        self._run = run

    async def process(
        self, context: FunctionInvocationContext, call_next: Callable[[], Awaitable[None]]
    ) -> None:
        """Refuse arguments the schema rejects; else report the call, run it, report the result."""
        run = self._run
        function = run.functions[context.function.name]
        call_id = str(context.metadata.get("call_id", ""))
        run.handled.add(_call_key(context.metadata.get("function_call_occurrence_id"), call_id))
        arguments = _plain(context.arguments)
        arguments_json = _arguments_json(arguments)

        problem = _argument_problem(function.name, run.validators[function.name], arguments)
        if problem is not None:
            context.result = problem  # not calling call_next: nothing runs
            run.emit(ToolRefused(function.name, call_id, arguments_json, problem))
            return

        await run.emit_and_wait(
            ToolStarted(function.name, call_id, arguments_json, function.side_effects)
        )
        try:
            await call_next()
            result = _text_of_result(context.result)
        except Exception:
            # A tool from another package may raise anything; the model gets a short error
            # and the details go to the log, not to the model.
            log.exception("function failed", extra={"function": function.name, "call_id": call_id})
            result = _FUNCTION_FAILED
            context.result = result
        run.emit(
            ToolFinished(function.name, call_id, arguments_json, function.side_effects, result)
        )


# --- conversions -----------------------------------------------------------------------------


def _framework_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """OpenAI chat messages as Agent Framework messages; InvalidRequest for bad ones."""
    if not messages:
        raise InvalidRequest("a request needs at least one message")
    converted: list[Message] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        text = _message_text(message.get("content"), index)
        author = message.get("name") or None
        if role in ("system", "developer", "user"):
            converted.append(Message(role, [Content.from_text(text)], author_name=author))
        elif role == "assistant":
            contents = [
                Content.from_function_call(
                    call_id=str(call.get("id") or ""),
                    name=str((call.get("function") or {}).get("name") or ""),
                    arguments=(call.get("function") or {}).get("arguments") or "",
                )
                for call in message.get("tool_calls") or []
            ]
            if text or not contents:
                contents.insert(0, Content.from_text(text))
            converted.append(Message("assistant", contents, author_name=author))
        elif role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            if not call_id:
                raise InvalidRequest(f"message {index}: a tool message needs a tool_call_id")
            converted.append(Message("tool", [Content.from_function_result(call_id, result=text)]))
        else:
            raise InvalidRequest(
                f"message {index}: unknown role {role!r}; use system, user, assistant or tool"
            )
    return converted


def _message_text(content: object, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, Mapping) and part.get("type") == "text" for part in content
    ):
        return "".join(str(part.get("text", "")) for part in content)
    raise InvalidRequest(f"message {index}: content must be text or a list of text parts")


def _texts(contents: Any) -> list[str]:
    return [c.text for c in contents if c.type == "text" and c.text]


def _text_of(result: Content) -> str:
    return result.result if isinstance(result.result, str) else json.dumps(result.result)


def _text_of_result(result: object) -> str:
    """What the model reads for a function result (a list of content items, once run)."""
    if isinstance(result, str):
        return result
    if isinstance(result, list):
        return "\n".join(item.text or "" for item in result if isinstance(item, Content))
    return str(result)


def _plain(arguments: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    return arguments.model_dump() if isinstance(arguments, BaseModel) else dict(arguments)


def _arguments_json(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"), default=str)


def _argument_problem(
    name: str, validator: jsonschema.protocols.Validator, arguments: Mapping[str, Any]
) -> str | None:
    """Why `arguments` do not fit the function's schema, as the model will read it."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    message = error.message  # quotes the offending value, maybe a long one
    if len(message) > _MAX_ERROR_CHARS:
        message = message[: _MAX_ERROR_CHARS - 1] + "…"
    return f"Error: invalid arguments for {name}: " + (
        f"argument `{where}`: {message}" if where else message
    )


def _call_key(occurrence_id: object, call_id: object) -> str:
    # Runtimes may reuse call ids from one model turn to the next (`call_0`); the
    # framework's occurrence id tells two such calls apart.
    return str(occurrence_id or call_id or "")


def _forbids_tools(choice: object) -> bool:
    return choice == "none" or (isinstance(choice, Mapping) and choice.get("mode") == "none")


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
