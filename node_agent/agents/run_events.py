"""What one agent run reports, in order: reply text, each function call, and how it ended.

Plain data: a caller that only relays events (the node API) needs nothing of the
agent framework to read them.
"""

from __future__ import annotations

from dataclasses import dataclass


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
