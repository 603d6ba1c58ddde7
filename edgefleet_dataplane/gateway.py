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
from collections.abc import Callable
from typing import Any

from edgefleet.v1 import node_pb2
from edgefleet_contract.routing import RoutingIndex, TargetKind
from edgefleet_dataplane.bearer import key_refusal
from edgefleet_dataplane.escalation import (
    ESCALATED_HEADER,
    ESCALATION_NODE,
    EscalationError,
    Escalator,
    escalated_body,
    escalation_reason,
)
from edgefleet_dataplane.http_server import Request, Response
from edgefleet_dataplane.openai_wire import (
    JSON_HEADERS,
    SSE_HEADERS,
    ApiProblem,
    completion_body,
    error_body,
    error_headers,
    model_entry,
    parse_json_object,
    parse_messages,
    parse_options,
    requested_model,
    route_problem,
    task_hint,
    wants_stream,
)
from edgefleet_dataplane.route_error import RouteError
from edgefleet_dataplane.router import Router
from edgefleet_dataplane.streams import completion_events, first, gather, relay

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 300.0
NODE_HEADER = "x-edgefleet-node"


def error_response(problem: ApiProblem) -> Response:
    """The HTTP answer to a request that failed with `problem`."""
    body = json.dumps(error_body(problem)).encode()
    return Response(problem.status, body, error_headers(problem.status))


class OpenAiGateway:
    """Answers the OpenAI API from the routing index, through the router."""

    def __init__(
        self,
        router: Router,
        index: Callable[[], RoutingIndex],
        escalator: Escalator | None = None,
        api_keys: Callable[[str], object] | None = None,
    ) -> None:
        """`index()` gives the current routing index. Without an `escalator`, nothing
        escalates. With `api_keys`, every request but the health check needs
        `Authorization: Bearer KEY`, and `api_keys(KEY)` must return (it raises to
        refuse the key)."""
        self._api_keys = api_keys
        self._router = router
        self._index = index
        self._escalator = escalator

    async def handle(self, request: Request) -> Response:
        """The HTTP handler."""
        try:
            path = request.path.split("?", 1)[0].rstrip("/")
            if path in ("/healthz", "/health"):
                return Response(200, b'{"status":"ok"}', list(JSON_HEADERS))
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
        refusal = key_refusal(request, self._api_keys)
        if refusal == "":
            raise ApiProblem(
                401,
                "this gateway needs an API key: send `Authorization: Bearer KEY` "
                "(`edgectl apikey create` makes one)",
                "invalid_api_key",
            )
        if refusal is not None:
            raise ApiProblem(401, f"the API key was refused: {refusal}", "invalid_api_key")

    def _models(self) -> Response:
        """`/v1/models`: every agent and model alias, with its ready replicas."""
        now = int(time.time())
        data = [
            model_entry(e.name, e.kind, e.deployment, now, len(self._router.ready(e.name, e.kind)))
            for e in self._index().listing()
        ]
        body = {"object": "list", "data": data}
        return Response(200, json.dumps(body).encode(), list(JSON_HEADERS))

    def _target(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[str, TargetKind]:
        """(name, "agent" | "model") for the request's `model`, or for its task hint."""
        index = self._index()
        model = requested_model(body)
        if model:
            kind = index.kind_of(model)
            if kind is not None:
                return model, kind
            known = ", ".join(index.names()) or "none deployed"
            raise ApiProblem(
                404,
                f"The model `{model}` does not exist: it is neither an agent nor a model alias "
                f"of a current deployment (known: {known})",
                "model_not_found",
                "model",
            )
        task = task_hint(body, headers)
        if not task:
            raise ApiProblem(
                400, "`model` is required (an agent name or a model alias)", param="model"
            )
        matching = index.models_for_task(task) if isinstance(task, str) else []
        if not matching:
            raise ApiProblem(
                404, f"no deployed model lists the task `{task}`", "model_not_found", "model"
            )
        # Prefer a model with a ready replica, then the primary, then the alias.
        matching.sort(
            key=lambda m: (not self._router.ready(m.alias, "model"), not m.primary, m.alias)
        )
        return matching[0].alias, "model"

    async def _chat(self, request: Request) -> Response:
        """`/v1/chat/completions`, for an agent or a model alias."""
        body = parse_json_object(request.body)
        target, kind = self._target(body, request.headers)
        stream = wants_stream(body)
        if kind == "model":
            return await self._proxy(target, body, request)
        invoke = node_pb2.InvokeAgentRequest(
            agent=target,
            messages=parse_messages(body.get("messages")),
            options=parse_options(body),
            request_id=request.headers.get("x-request-id", ""),  # the router fills in one
        )
        # The first chunk comes before the response starts: a failure until then is
        # retried by the router, escalated, or answered with a proper status code. A
        # whole (not streamed) answer reaches the client only at its end, so until then
        # (or until a tool starts) the router may still retry it elsewhere.
        chunks = self._router.invoke_agent(invoke, REQUEST_TIMEOUT_S, whole=not stream)
        try:
            head = await first(chunks)
        except RouteError as error:
            return await self._escalate(error, target, "agent", body)
        self._edge_served(target, "agent")
        node = head.node_id if head is not None else ""
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if stream:
            events = completion_events(completion_id, target, head, chunks)
            return Response(200, headers=[*SSE_HEADERS, (NODE_HEADER, node)], stream=events)
        answer = await gather(head, chunks)
        completion = completion_body(
            completion_id,
            target,
            int(time.time()),
            answer.content,
            answer.finish_reason,
            answer.usage,
        )
        headers = [*JSON_HEADERS, (NODE_HEADER, node)]
        return Response(200, json.dumps(completion).encode(), headers)

    async def _proxy(self, alias: str, body: dict[str, Any], request: Request) -> Response:
        """A model alias's request, sent as it is to a runtime that has the model."""
        sent = request.body  # the client's bytes, unless `model` or `metadata` must change
        if body.get("model") != alias or "metadata" in body:
            body = {**body, "model": alias}
            body.pop("metadata", None)
            sent = json.dumps(body).encode()
        served: list[str] = []
        chunks = self._router.proxy_model(
            alias,
            sent,
            REQUEST_TIMEOUT_S,
            request_id=request.headers.get("x-request-id", ""),
            served_by=served,
            user=body["user"] if isinstance(body.get("user"), str) else "",
            whole=not wants_stream(body),
        )
        try:
            head = await first(chunks)
        except RouteError as error:
            return await self._escalate(error, alias, "model", body)
        if head is None:
            raise ApiProblem(502, f"the runtime serving `{alias}` sent no response")
        self._edge_served(alias, "model")
        node = served[0] if served else ""
        status = head.http_status or 200
        headers = [("content-type", head.content_type or "application/json"), (NODE_HEADER, node)]
        if "text/event-stream" in (head.content_type or ""):
            return Response(status, headers=headers, stream=relay(head, chunks))
        data = bytearray(head.data)
        async for chunk in chunks:
            data += chunk.data
        return Response(status, bytes(data), headers)

    async def _escalate(
        self, error: RouteError, target: str, kind: TargetKind, body: dict[str, Any]
    ) -> Response:
        """Send what the edge could not serve to the deployment's escalation endpoint;
        re-raises `error` when the request must not escalate."""
        endpoint, instructions = self._index().escalation(target, kind)
        reason = escalation_reason(error, endpoint)
        if reason is None or endpoint is None or self._escalator is None:
            raise error
        sent = escalated_body(body, endpoint.model, kind, instructions)
        try:
            response = await self._escalator.send(
                endpoint, sent, target=target, kind=kind, reason=reason
            )
        except EscalationError as failed:
            response = error_response(ApiProblem(failed.status, f"{error}; {failed}", failed.code))
            if failed.retry_after:
                response.headers.append(("retry-after", failed.retry_after))
        response.headers += [(NODE_HEADER, ESCALATION_NODE), (ESCALATED_HEADER, reason)]
        return response

    def _edge_served(self, target: str, kind: TargetKind) -> None:
        if self._escalator is not None:
            self._escalator.edge_served(target, kind)
