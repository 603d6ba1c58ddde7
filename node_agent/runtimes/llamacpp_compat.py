"""Request fixes for llama.cpp models whose chat template has no tool turns.

llama-server renders messages through the model's own chat template. A template
written without tools (SmolLM2's, for one) renders an assistant message that
carries only `tool_calls` as an empty turn and a `role: tool` message under a
role the model never saw, so the model does not read the call or its result as
such. This module rewrites those two message shapes into turns every template
renders, without changing meaning. Models whose template takes tools get their
messages as they are.
"""

from __future__ import annotations

import json
from typing import Any


def compat_messages(
    messages: list[dict[str, Any]], names: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """OpenAI chat messages rewritten so llama.cpp's templates render tool turns.

    `names` maps tool-call ids to tool names; calls seen here are added to it, so
    results in later calls can be labelled with the tool that produced them.
    """
    names = {} if names is None else names
    fixed: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                names[str(call.get("id", ""))] = str(function.get("name", "tool"))
            fixed.append({**message, "content": message.get("content") or ""})
        elif role == "tool":
            call_id = str(message.get("tool_call_id", ""))
            name = message.get("name") or names.get(call_id, "tool")
            fixed.append({"role": "user", "content": f"Result of tool `{name}`: {_text(message)}"})
        else:
            fixed.append(message)
    return fixed


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return json.dumps(content)


class LlamaCppMessagePreparer:
    """Agent Framework `message_preparer` hook that applies `compat_messages`.

    The hook is called once per framework message, in order, so this object keeps
    the names of recent tool calls to label the results that follow. Call ids are
    unique, so one instance may serve many requests; the map is bounded.
    """

    MAX_REMEMBERED = 512

    def __init__(self) -> None:
        self._names: dict[str, str] = {}

    def __call__(self, message: object, prepared: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fixed = compat_messages(prepared, self._names)
        while len(self._names) > self.MAX_REMEMBERED:
            del self._names[next(iter(self._names))]
        return fixed
