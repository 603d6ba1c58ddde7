"""What one request's middleware shares with the iterator that reports it: the queue of
run events, the token totals, and which of the model's calls were reported."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_framework import ChatResponse, Content, Message

from node_agent.agents.agent_functions import AgentFunctions, arguments_json
from node_agent.agents.run_events import RunEvent, ToolRefused


@dataclass(slots=True)
class QueuedEvent:
    """A run event on its way to the caller; `taken` resolves once the caller has it."""

    event: RunEvent
    taken: asyncio.Future[None] | None = None


@dataclass(slots=True)
class TokenUsage:
    """Token totals over the model calls of a run; None once a call did not report them."""

    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0

    def add(self, response: ChatResponse[Any]) -> None:
        """Count one model call's tokens."""
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
class RunState:
    """What one request's middleware shares with the iterator that reports it."""

    functions: AgentFunctions
    usage: TokenUsage = field(default_factory=TokenUsage)
    handled: set[str] = field(default_factory=set)
    """Calls the function middleware reported (started or refused), by `call_key`."""
    calls: list[Content] = field(default_factory=list)
    """Calls the model made in this run that no event reported yet."""
    _events: asyncio.Queue[QueuedEvent | None] = field(default_factory=asyncio.Queue)

    def emit(self, event: RunEvent) -> None:
        """Report `event` without waiting for the caller."""
        self._events.put_nowait(QueuedEvent(event))

    async def emit_and_wait(self, event: RunEvent) -> None:
        """Report `event` and return once the caller has taken it."""
        taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._events.put_nowait(QueuedEvent(event, taken))
        await taken

    async def next(self) -> QueuedEvent | None:
        """The next event to report; None once the run has ended."""
        return await self._events.get()

    def end(self, _task: object) -> None:
        """Mark the end of the run (a done callback of the task that runs it)."""
        self._events.put_nowait(None)

    def note_calls(self, response: ChatResponse[Any]) -> None:
        """Remember the function calls a model call asked for."""
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
            if call_key(call.id, call.call_id) in self.handled:
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
                    arguments_json=arguments_json(call.parse_arguments() or {}),
                    result=_text_of(result),
                )
            )
        self.calls = waiting


def call_key(occurrence_id: object, call_id: object) -> str:
    """The key that tells one function call of a run from every other."""
    # Runtimes may reuse call ids from one model turn to the next (`call_0`); the
    # framework's occurrence id tells two such calls apart.
    return str(occurrence_id or call_id or "")


def _text_of(result: Content) -> str:
    return result.result if isinstance(result.result, str) else json.dumps(result.result)
