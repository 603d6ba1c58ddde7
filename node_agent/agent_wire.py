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


_PHASES = {
    ToolStarted: node_pb2.ToolEvent.PHASE_STARTED,
    ToolFinished: node_pb2.ToolEvent.PHASE_FINISHED,
    ToolRefused: node_pb2.ToolEvent.PHASE_REFUSED,
}


def tool_event(event: RunEvent) -> node_pb2.ToolEvent | None:
    """The ToolEvent for a run event about a tool call (None for other events)."""
    phase = _PHASES.get(type(event))
    if phase is None:
        return None
    assert isinstance(event, ToolStarted | ToolFinished | ToolRefused)
    return node_pb2.ToolEvent(
        phase=phase,
        tool=event.name,
        call_id=event.call_id,
        arguments_json=event.arguments_json,
        # A refused call never ran: it has no side effects to report.
        side_effects=getattr(event, "side_effects", False),
        result=getattr(event, "result", ""),
    )
