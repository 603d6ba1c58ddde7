"""The OpenAI-compatible gateway: `/v1/chat/completions` and `/v1/models`.

`model` names an agent (the request runs through the agent, tools included) or
a model alias (the request goes straight to a runtime on a node that has it
loaded). With no `model`, a task hint (`metadata.task`, or the
`X-EdgeFleet-Task` header) picks the model whose `tasks` list it. Requests are
routed to a ready replica and retried on another while nothing has reached the
client; when no edge replica can serve and the deployment has an `escalation`,
the request goes to that endpoint instead (`X-EdgeFleet-Node: escalation`,
`X-EdgeFleet-Escalated: REASON`). Errors use OpenAI's error shape and status
codes. Every response names the node that served it in `X-EdgeFleet-Node`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from edgefleet.v1 import common_pb2, node_pb2
from orchestrator.gateway.escalation import (
    ESCALATED_HEADER,
    ESCALATION_NODE,
    EscalationError,
    Escalator,
    escalated_body,
    escalation_reason,
    find_escalation,
)
from orchestrator.gateway.http import Request, Response
from orchestrator.manifest import DesiredState
from orchestrator.routing.replicas import TargetKind
from orchestrator.routing.router import RouteError, Router

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 300.0
NODE_HEADER = "x-edgefleet-node"
TASK_HEADER = "x-edgefleet-task"
JSON = [("content-type", "application/json")]
SSE = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.FAILED_PRECONDITION: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiProblem(Exception):
    """A request answered with an OpenAI-shaped error."""

    def __init__(
        self, status: int, message: str, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.param = param


def error_response(problem: ApiProblem) -> Response:
    """OpenAI's error JSON: {"error": {"message", "type", "param", "code"}}."""
    body = {
        "error": {
            "message": str(problem),
            "type": _ERROR_TYPE.get(problem.status, "server_error"),
            "param": problem.param,
            "code": problem.code,
        }
    }
    headers = list(JSON)
    if problem.status == 401:
        headers.append(("www-authenticate", "Bearer"))
    if problem.status in (429, 503):
        headers.append(("retry-after", "1"))
    return Response(problem.status, json.dumps(body).encode(), headers)


def route_problem(error: RouteError) -> ApiProblem:
    """A routing failure as the HTTP error a client sees."""
    status = _HTTP_STATUS.get(error.code, 502)
    code = {429: "queue_full", 503: "no_healthy_replica", 504: "timeout"}.get(status)
    return ApiProblem(status, str(error), code)


class OpenAiGateway:
    """Answers the OpenAI API from the current deployments, through the router."""

    def __init__(
        self,
        router: Router,
        deployments: Callable[[], Sequence[DesiredState]],
        escalator: Escalator | None = None,
        api_keys: Callable[[str], object] | None = None,
    ) -> None:
        """Without an `escalator`, nothing escalates. With `api_keys`, every request but
        the health check needs `Authorization: Bearer KEY`, and `api_keys(KEY)` must
        return (it raises to refuse the key)."""
        self._api_keys = api_keys
        self._router = router
        self._deployments = deployments
        self._escalator = escalator

    async def handle(self, request: Request) -> Response:
        """The HTTP handler."""
        try:
            path = request.path.split("?", 1)[0].rstrip("/")
            if path in ("/healthz", "/health"):
                return Response(200, b'{"status":"ok"}', list(JSON))
            self._authorize(request)
            if path == "/v1/chat/completions":
                if request.method != "POST":
                    raise ApiProblem(405, "use POST for /v1/chat/completions")
                return await self._chat(request)
            if path == "/v1/models":
                if request.method != "GET":
                    raise ApiProblem(405, "use GET for /v1/models")
                return self._models()
            raise ApiProblem(404, f"no such endpoint: {request.method} {path}", "not_found")
        except ApiProblem as problem:
            return error_response(problem)
        except RouteError as error:
            return error_response(route_problem(error))
        except Exception as exc:  # a bug must not take the connection down silently
            log.exception("gateway request failed")
            return error_response(ApiProblem(500, f"internal error in the gateway: {exc!r}"))

    def _authorize(self, request: Request) -> None:
        """401 unless the request carries an API key the controller issued (when keys are on)."""
        if self._api_keys is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiProblem(
                401,
                "this gateway needs an API key: send `Authorization: Bearer KEY` "
                "(`edgectl apikey create` makes one)",
                "invalid_api_key",
            )
        try:
            self._api_keys(key.strip())
        except Exception as exc:  # the check says why; the key itself is never echoed
            raise ApiProblem(401, f"the API key was refused: {exc}", "invalid_api_key") from None

    # -- /v1/models --------------------------------------------------------------------

    def _models(self) -> Response:
        now = int(time.time())
        data: list[dict[str, Any]] = []
        seen: set[str] = set()
        for deployment in self._deployments():
            for agent in deployment.agents:
                if agent.name not in seen:
                    seen.add(agent.name)
                    data.append(self._model_entry(agent.name, "agent", deployment.name, now))
            for model in deployment.models:
                if model.alias not in seen:
                    seen.add(model.alias)
                    data.append(self._model_entry(model.alias, "model", deployment.name, now))
        body = {"object": "list", "data": data}
        return Response(200, json.dumps(body).encode(), list(JSON))

    def _model_entry(
        self, name: str, kind: TargetKind, deployment: str, now: int
    ) -> dict[str, Any]:
        ready = len(self._router.ready(name, kind))
        return {
            "id": name,
            "object": "model",
            "created": now,
            "owned_by": f"edgefleet/{deployment}",
            "kind": kind,
            "ready_replicas": ready,
        }

    # -- /v1/chat/completions ------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        body = _json_object(request.body)
        target, kind = self._target(body, request.headers)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ApiProblem(400, "`stream` must be true or false", param="stream")
        if kind == "model":
            return await self._proxy(target, body, request)
        invoke = node_pb2.InvokeAgentRequest(
            agent=target,
            messages=_messages(body.get("messages")),
            options=_options(body),
            request_id=request.headers.get("x-request-id", ""),  # the router fills in one
        )
        chunks = self._router.invoke_agent(invoke, REQUEST_TIMEOUT_S)
        # The first chunk comes before the response starts: a failure until then is
        # retried by the router, escalated, or answered with a proper status code.
        try:
            first = await _first(chunks)
        except RouteError as error:
            return await self._escalate(error, target, "agent", body)
        self._edge_served(target, "agent")
        node = first.node_id if first is not None else ""
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if stream:
            return Response(
                200,
                headers=[*SSE, (NODE_HEADER, node)],
                stream=_sse(completion_id, target, first, chunks),
            )
        content: list[str] = []
        finish = "stop"
        usage = common_pb2.Usage()
        async for chunk in _chain(first, chunks):
            content.append(chunk.delta)
            if chunk.finish_reason:
                finish = chunk.finish_reason
            if chunk.HasField("usage"):
                usage = chunk.usage
        completion = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": target,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(content)},
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(usage),
        }
        return Response(200, json.dumps(completion).encode(), [*JSON, (NODE_HEADER, node)])

    def _target(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[str, str]:
        """(name, "agent" | "model") for the request's `model`, or for its task hint."""
        deployments = self._deployments()
        agents = {a.name for d in deployments for a in d.agents}
        models = {m.alias: m for d in deployments for m in d.models}
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise ApiProblem(400, "`model` must be a string", param="model")
        if model:
            if model in agents:
                return model, "agent"
            if model in models:
                return model, "model"
            known = ", ".join(sorted(agents | set(models))) or "none deployed"
            raise ApiProblem(
                404,
                f"The model `{model}` does not exist: it is neither an agent nor a model alias "
                f"of a current deployment (known: {known})",
                "model_not_found",
                "model",
            )
        metadata = body.get("metadata")
        task = headers.get(TASK_HEADER) or (
            metadata.get("task") if isinstance(metadata, dict) else None
        )
        if not task:
            raise ApiProblem(
                400, "`model` is required (an agent name or a model alias)", param="model"
            )
        matching = [m for m in models.values() if task in m.tasks]
        if not matching:
            raise ApiProblem(
                404, f"no deployed model lists the task `{task}`", "model_not_found", "model"
            )
        # Prefer a model with a ready replica, then the primary, then the alias.
        matching.sort(
            key=lambda m: (not self._router.ready(m.alias, "model"), m.role != "primary", m.alias)
        )
        return matching[0].alias, "model"

    async def _proxy(self, alias: str, body: dict[str, Any], request: Request) -> Response:
        body = {**body, "model": alias}
        body.pop("metadata", None)
        served: list[str] = []
        chunks = self._router.proxy_model(
            alias,
            json.dumps(body).encode(),
            REQUEST_TIMEOUT_S,
            request_id=request.headers.get("x-request-id", ""),
            served_by=served,
            user=body["user"] if isinstance(body.get("user"), str) else "",
        )
        try:
            first = await _first(chunks)
        except RouteError as error:
            return await self._escalate(error, alias, "model", body)
        if first is None:
            raise ApiProblem(502, f"the runtime serving `{alias}` sent no response")
        self._edge_served(alias, "model")
        node = served[0] if served else ""
        status = first.http_status or 200
        headers = [("content-type", first.content_type or "application/json"), (NODE_HEADER, node)]
        if "text/event-stream" in (first.content_type or ""):
            return Response(status, headers=headers, stream=_raw(first, chunks))
        data = bytearray(first.data)
        async for chunk in chunks:
            data += chunk.data
        return Response(status, bytes(data), headers)

    async def _escalate(
        self, error: RouteError, target: str, kind: TargetKind, body: dict[str, Any]
    ) -> Response:
        """Send what the edge could not serve to the deployment's escalation endpoint;
        re-raises `error` when the request must not escalate."""
        spec, instructions = find_escalation(target, kind, self._deployments())
        reason = escalation_reason(error, spec)
        if reason is None or spec is None or self._escalator is None:
            raise error
        sent = escalated_body(body, spec.model, kind, instructions)
        try:
            response = await self._escalator.send(
                spec, sent, target=target, kind=kind, reason=reason
            )
        except EscalationError as failed:
            problem = ApiProblem(failed.status, f"{error}; {failed}", failed.code)
            response = error_response(problem)
            if failed.retry_after:
                response.headers.append(("retry-after", failed.retry_after))
        response.headers += [(NODE_HEADER, ESCALATION_NODE), (ESCALATED_HEADER, reason)]
        return response

    def _edge_served(self, target: str, kind: TargetKind) -> None:
        if self._escalator is not None:
            self._escalator.edge_served(target, kind)


# -- request parsing ---------------------------------------------------------------------


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiProblem(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiProblem(400, "the request body must be a JSON object")
    return body


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


def _messages(raw: Any) -> list[common_pb2.ChatMessage]:
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
        found.append(
            common_pb2.ChatMessage(
                role=role,
                content=_text(message.get("content"), where),
                name=str(message.get("name") or ""),
                tool_call_id=str(message.get("tool_call_id") or ""),
                tool_calls=calls,
            )
        )
    return found


def _options(body: dict[str, Any]) -> common_pb2.GenerationOptions:
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
    stop = body.get("stop")
    if isinstance(stop, str):
        options.stop.append(stop)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        options.stop.extend(stop)
    elif stop is not None:
        raise ApiProblem(400, "`stop` must be a string or a list of strings", param="stop")
    user = body.get("user")
    if isinstance(user, str):
        options.user = user
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        options.tool_choice = choice
    elif isinstance(choice, dict):
        function = choice.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ApiProblem(400, "`tool_choice` names no function", param="tool_choice")
        options.tool_choice = function["name"]
    return options


def _usage(usage: common_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


# -- streams -----------------------------------------------------------------------------


async def _first(stream: AsyncIterator[Any]) -> Any:
    """The first item, or None for an empty stream."""
    async for item in stream:
        return item
    return None


async def _chain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    if first is not None:
        yield first
    async for item in rest:
        yield item


async def _raw(
    first: node_pb2.ProxyModelChunk, rest: AsyncIterator[node_pb2.ProxyModelChunk]
) -> AsyncIterator[bytes]:
    yield first.data
    try:
        async for chunk in rest:
            yield chunk.data
    except RouteError as error:
        # The stream broke after the client got part of it: say so in the stream.
        yield _sse_error(str(error))


async def _sse(
    completion_id: str,
    model: str,
    first: node_pb2.InvokeAgentChunk | None,
    rest: AsyncIterator[node_pb2.InvokeAgentChunk],
) -> AsyncIterator[bytes]:
    created = int(time.time())

    def event(delta: dict[str, Any], finish: str | None, usage: Any = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage is not None:
            chunk["usage"] = usage
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    yield event({"role": "assistant", "content": ""}, None)
    finished = False
    try:
        async for chunk in _chain(first, rest):
            if chunk.delta:
                yield event({"content": chunk.delta}, None)
            if chunk.finish_reason:
                usage = _usage(chunk.usage) if chunk.HasField("usage") else None
                yield event({}, chunk.finish_reason, usage)
                finished = True
    except RouteError as error:
        yield _sse_error(str(error))
        return
    if not finished:
        yield event({}, "stop")
    yield b"data: [DONE]\n\n"


def _sse_error(message: str) -> bytes:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"
