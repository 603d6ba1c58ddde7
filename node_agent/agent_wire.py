"""Conversions between the node API's chat and tool messages and the agent runner's types."""

from __future__ import annotations

from typing import Any

from edgefleet.v1 import node_pb2
from node_agent.agents.run_events import RunEvent, ToolFinished, ToolRefused, ToolStarted
from node_agent.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def messages_from_proto(messages: Any) -> list[dict[str, Any]]:
    """OpenAI-shaped chat messages from ChatMessage protos; InvalidRequest when malformed."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise InvalidRequest(
                f"messages[{i}].role `{m.role}` is not one of {', '.join(sorted(ROLES))}"
            )
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name:
            message["name"] = m.name
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        if m.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json or "{}"},
                }
                for c in m.tool_calls
            ]
        out.append(message)
    if not out:
        raise InvalidRequest("messages must not be empty")
    return out


def tool_event(event: RunEvent) -> node_pb2.ToolEvent | None:
    """The ToolEvent for a run event about a tool call (None for other events)."""
    if isinstance(event, ToolStarted):
        return node_pb2.ToolEvent(
            phase=node_pb2.ToolEvent.PHASE_STARTED,
            tool=event.name,
            call_id=event.call_id,
            side_effects=event.side_effects,
            arguments_json=event.arguments_json,
        )
    if isinstance(event, ToolFinished):
        return node_pb2.ToolEvent(
            phase=node_pb2.ToolEvent.PHASE_FINISHED,
            tool=event.name,
            call_id=event.call_id,
            side_effects=event.side_effects,
            arguments_json=event.arguments_json,
            result=event.result,
        )
    if isinstance(event, ToolRefused):
        return node_pb2.ToolEvent(
            phase=node_pb2.ToolEvent.PHASE_REFUSED,
            tool=event.name,
            call_id=event.call_id,
            arguments_json=event.arguments_json,
            result=event.result,
        )
    return None
