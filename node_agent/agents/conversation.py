"""A request's conversation: OpenAI chat messages as Agent Framework messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent_framework import Content, Message

from node_agent.errors import InvalidRequest


def framework_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
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
