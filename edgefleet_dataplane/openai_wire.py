"""OpenAI's chat-completions wire format: requests in, completions, chunks and errors out.

Pure functions: a request body becomes the node API's messages and options (or an
`ApiProblem` saying what is wrong with it), and answers become OpenAI's JSON shapes
and server-sent events. No I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grpc

from edgefleet.v1 import common_pb2
from edgefleet_contract.routing import TargetKind
from edgefleet_dataplane.route_error import RouteError

TASK_HEADER = "x-edgefleet-task"
JSON_HEADERS = (("content-type", "application/json"),)
SSE_HEADERS = (("content-type", "text/event-stream"), ("cache-control", "no-cache"))
SSE_DONE = b"data: [DONE]\n\n"
"""The event that ends a stream of completion chunks."""

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.FAILED_PRECONDITION: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
"""A node's gRPC status as the HTTP status a client gets (anything else: 502)."""
ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "rate_limit_error",
}
"""OpenAI's error `type` by status (anything else: server_error)."""
ROUTE_ERROR_CODE = {429: "queue_full", 503: "no_healthy_replica", 504: "timeout"}


class ApiProblem(Exception):
    """A request answered with an OpenAI-shaped error."""

    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


# -- errors --------------------------------------------------------------------------------


def error_body(problem: ApiProblem) -> dict[str, Any]:
    """OpenAI's error JSON: {"error": {"message", "type", "param", "code"}}."""
    return {
        "error": {
            "message": str(problem),
            "type": ERROR_TYPE.get(problem.status, "server_error"),
            "param": problem.param,
            "code": problem.code,
        }
    }


def error_headers(status: int) -> list[tuple[str, str]]:
    """The headers of an error answer: JSON, and what the status asks a client to do."""
    headers = list(JSON_HEADERS)
    if status == 401:
        headers.append(("www-authenticate", "Bearer"))
    if status in (429, 503):
        headers.append(("retry-after", "1"))
    return headers


def route_problem(error: RouteError) -> ApiProblem:
    """A routing failure as the HTTP error a client sees."""
    status = HTTP_STATUS.get(error.code, 502)
    return ApiProblem(status, str(error), ROUTE_ERROR_CODE.get(status))


# -- requests ------------------------------------------------------------------------------


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body, which must be one JSON object."""
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiProblem(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiProblem(400, "the request body must be a JSON object")
    return body


def requested_model(body: Mapping[str, Any]) -> str:
    """The request's `model` (an agent name or a model alias); empty when not given."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiProblem(400, "`model` must be a string", param="model")
    return model or ""


def task_hint(body: Mapping[str, Any], headers: Mapping[str, str]) -> object:
    """The task a request without `model` names: `X-EdgeFleet-Task`, else
    `metadata.task` (as sent: a task that is not a string matches no model)."""
    metadata = body.get("metadata")
    return headers.get(TASK_HEADER) or (
        metadata.get("task") if isinstance(metadata, dict) else None
    )


def wants_stream(body: Mapping[str, Any]) -> bool:
    """The request's `stream` flag."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiProblem(400, "`stream` must be true or false", param="stream")
    return stream


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            else:
                raise ApiProblem(400, f"{where}: only text content parts are supported")
        return "".join(parts)
    raise ApiProblem(400, f"{where}: `content` must be a string or a list of text parts")


def _tool_calls(message: Mapping[str, Any]) -> list[common_pb2.ToolCall]:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", {}) if isinstance(call, dict) else {}
        calls.append(
            common_pb2.ToolCall(
                id=str(call.get("id", "")) if isinstance(call, dict) else "",
                name=str(function.get("name", "")),
                arguments_json=str(function.get("arguments", "")),
            )
        )
    return calls


def parse_messages(raw: Any) -> list[common_pb2.ChatMessage]:
    """The request's `messages` as the node API's chat messages."""
    if not isinstance(raw, list) or not raw:
        raise ApiProblem(400, "`messages` must be a non-empty list", param="messages")
    found = []
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiProblem(400, f"{where} must be an object with a `role`", param=where)
        role = message["role"]
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise ApiProblem(400, f"{where}: unknown role `{role}`", param=where)
        found.append(
            common_pb2.ChatMessage(
                role=role,
                content=_text(message.get("content"), where),
                name=str(message.get("name") or ""),
                tool_call_id=str(message.get("tool_call_id") or ""),
                tool_calls=_tool_calls(message),
            )
        )
    return found


def parse_options(body: Mapping[str, Any]) -> common_pb2.GenerationOptions:
    """The request's sampling and tool options as the node API's generation options."""
    options = common_pb2.GenerationOptions()
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise ApiProblem(400, "`max_tokens` must be a positive integer", param="max_tokens")
        options.max_tokens = min(max_tokens, 2**31)
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ApiProblem(400, f"`{name}` must be a number", param=name)
            setattr(options, name, float(value))
    seed = body.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ApiProblem(400, "`seed` must be an integer", param="seed")
        options.seed = seed
    options.stop.extend(_stop(body.get("stop")))
    user = body.get("user")
    if isinstance(user, str):
        options.user = user
    options.tool_choice = _tool_choice(body.get("tool_choice"))
    return options


def _stop(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return stop
    if stop is not None:
        raise ApiProblem(400, "`stop` must be a string or a list of strings", param="stop")
    return []


def _tool_choice(choice: Any) -> str:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        function = choice.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ApiProblem(400, "`tool_choice` names no function", param="tool_choice")
        return str(function["name"])
    return ""


# -- answers -------------------------------------------------------------------------------


def usage_body(usage: common_pb2.Usage) -> dict[str, int]:
    """Token counts as OpenAI's `usage`."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def completion_body(
    completion_id: str,
    model: str,
    created: int,
    content: str,
    finish_reason: str,
    usage: common_pb2.Usage,
) -> dict[str, Any]:
    """A whole `chat.completion` with one assistant message."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_body(usage),
    }


def chunk_body(
    completion_id: str,
    model: str,
    created: int,
    delta: Mapping[str, Any],
    finish_reason: str | None,
    usage: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk` of a streamed completion."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish_reason}],
    }
    if usage is not None:
        chunk["usage"] = dict(usage)
    return chunk


def sse_event(data: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying a JSON object."""
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def sse_error(message: str) -> bytes:
    """The event that ends a stream broken after the client got part of it."""
    return sse_event(
        {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    )


def model_entry(
    name: str, kind: TargetKind, deployment: str, created: int, ready_replicas: int
) -> dict[str, Any]:
    """One entry of `/v1/models`: an agent or a model alias, with its ready replicas."""
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": f"edgefleet/{deployment}",
        "kind": kind,
        "ready_replicas": ready_replicas,
    }
