"""Tool choices a runtime cannot honour as written, turned into requests it can.

* A function's name as tool_choice, for a runtime that takes only `auto`, `none`
  or `required` (llama-server): the request offers that function alone, with
  `required` — the same demand in words every runtime reads.
* A call the request demands (`required`, or a name) from a model that never sees
  tools (its chat template has none): the request asks for the call itself as
  JSON, `{"name": ..., "arguments": {...}}`, through `response_format` with the
  functions' schemas, which the runtime's grammar holds the model to; the reply is
  then read back into a function call for the framework to run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from agent_framework import ChatResponse, Content, Message

from node_agent.agents.agent_functions import AgentFunctions


def demanded(choice: object) -> tuple[bool, str]:
    """(a call is demanded, the function named or "") for a tool_choice as the loop has it."""
    if choice == "required":
        return True, ""
    if isinstance(choice, Mapping) and choice.get("mode") == "required":
        return True, str(choice.get("required_function_name") or "")
    return False, ""


def offered_names(tools: object) -> list[str]:
    """Names of the tools a model call offers (framework tools or OpenAI tool dicts)."""
    names = []
    for tool in tools if isinstance(tools, Sequence) else ():
        name = getattr(tool, "name", None)
        if name is None and isinstance(tool, Mapping):
            name = (tool.get("function") or {}).get("name")
        if name:
            names.append(str(name))
    return names


def only_named(options: dict[str, Any], name: str) -> None:
    """Rewrite `options` to offer function `name` alone with tool_choice `required`."""
    tools = options.get("tools")
    if isinstance(tools, Sequence):
        options["tools"] = [t for t in tools if offered_names([t]) == [name]]
    options["tool_choice"] = "required"


def ask_for_json(options: dict[str, Any], functions: AgentFunctions, names: Sequence[str]) -> None:
    """Rewrite `options` to ask for one call of `names` as JSON held to their schemas."""
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": dict(functions[name].parameters)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for name in names
    ]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    options.pop("tools", None)
    options.pop("tool_choice", None)
    # `extra_body`: sent as written, past the framework's own structured-output handling.
    options["extra_body"] = {
        **dict(options.get("extra_body") or {}),
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "function_call", "schema": schema},
        },
    }


def call_from_reply(response: ChatResponse[Any], names: Sequence[str]) -> ChatResponse[Any]:
    """The reply read as the demanded call; the reply as it is when it is not one (e.g. JSON
    cut off by max_tokens)."""
    text = "".join(
        c.text or "" for m in response.messages for c in m.contents if c.type == "text"
    ).strip()
    try:
        call = json.loads(text)
    except json.JSONDecodeError:
        return response
    if not isinstance(call, dict) or call.get("name") not in names:
        return response
    arguments = call.get("arguments")
    content = Content.from_function_call(
        call_id=f"call_{uuid.uuid4().hex[:24]}",
        name=str(call["name"]),
        arguments=json.dumps(arguments if isinstance(arguments, dict) else {}),
    )
    return ChatResponse(
        messages=[Message("assistant", [content])],
        response_id=response.response_id,
        model=response.model,
        created_at=response.created_at,
        finish_reason="tool_calls",
        usage_details=response.usage_details,
    )
