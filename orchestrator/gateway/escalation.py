"""Escalation: what no edge replica can serve goes to the deployment's cloud endpoint.

A request escalates only when the router says the edge is exhausted (no ready
replica, every circuit open, every replica refused or failed, queues full, retry
budget spent) and nothing has started: a bad request, a spent deadline or an
unknown outcome (an answer or a tool had started) never escalates. The request
goes to `{base_url}/chat/completions` with the escalation's `model`; an agent's
instructions lead as a system message (its tools stay on the edge). The API key
comes from the controller's environment and appears in no log, event or response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestrator.events import EventLog
from orchestrator.gateway.http import Response
from orchestrator.manifest.desired import DesiredState, EscalationSpec
from orchestrator.routing.replicas import TargetKind
from orchestrator.routing.router import Exhausted, RouteError

log = logging.getLogger(__name__)

ESCALATION_NODE = "escalation"
"""What `X-EdgeFleet-Node` says of an escalated answer."""
ESCALATED_HEADER = "x-edgefleet-escalated"
"""Why the request escalated (a `RouteError.exhausted` reason)."""
AGENT_ONLY_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")
"""An agent's tools run only on the edge: their fields do not go to the endpoint."""
MAX_ERROR_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 300


class EscalationError(Exception):
    """The escalation endpoint could not answer; `status` is what the client gets."""

    def __init__(
        self, status: int, message: str, code: str, retry_after: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


def escalation_reason(error: RouteError, spec: EscalationSpec | None) -> Exhausted | None:
    """Why the request goes to the escalation endpoint, or None when it must not."""
    return error.exhausted if spec is not None else None


def find_escalation(
    target: str, kind: TargetKind, deployments: Sequence[DesiredState]
) -> tuple[EscalationSpec | None, str]:
    """(escalation, agent instructions) of the deployment that declares the target."""
    for deployment in deployments:
        if kind == "agent":
            for agent in deployment.agents:
                if agent.name == target:
                    return deployment.escalation, agent.instructions
        elif any(model.alias == target for model in deployment.models):
            return deployment.escalation, ""
    return None, ""


def escalated_body(
    body: Mapping[str, Any], model: str, kind: TargetKind, instructions: str = ""
) -> dict[str, Any]:
    """The request as the escalation endpoint gets it."""
    sent = {key: value for key, value in body.items() if key != "metadata"}
    sent["model"] = model
    if kind == "agent":
        for key in AGENT_ONLY_FIELDS:
            sent.pop(key, None)
        if instructions:
            sent["messages"] = [{"role": "system", "content": instructions}, *body["messages"]]
    return sent


def endpoint_host(base_url: str) -> str:
    """HOST[:PORT] of an endpoint, for messages (never user info or path)."""
    parts = urlsplit(base_url)
    host = parts.hostname or base_url
    return f"{host}:{parts.port}" if parts.port else host


class Escalator:
    """Sends escalated requests over one shared HTTP client; counts them by target."""

    def __init__(
        self,
        events: EventLog | None = None,
        environ: Mapping[str, str] = os.environ,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._events = events
        self._environ = environ
        # Deadlines are the escalation's `timeout`, enforced per request below.
        self._client = httpx.AsyncClient(timeout=None, transport=transport)
        self.escalated: Counter[str] = Counter()
        """Escalated requests since the controller started, by `agent/NAME` or `model/ALIAS`."""
        self._ongoing: dict[str, int] = {}
        """Targets escalating now: escalated requests since the edge last served them."""

    async def close(self) -> None:
        """Close the shared client and its connections."""
        await self._client.aclose()

    def edge_served(self, target: str, kind: TargetKind) -> None:
        """An edge replica served the target: an escalation episode ends."""
        obj = f"{kind}/{target}"
        count = self._ongoing.pop(obj, None)
        if count is not None and self._events is not None:
            self._events.record(
                "info",
                "EscalationEnded",
                obj,
                f"{kind} {target} is served on the edge again after {count} escalated request(s)",
            )

    async def send(
        self,
        spec: EscalationSpec,
        body: dict[str, Any],
        *,
        target: str,
        kind: TargetKind,
        reason: Exhausted,
    ) -> Response:
        """Send one request to the endpoint; its answer (status, content type, body or
        event stream), or EscalationError with the status to answer instead."""
        host = endpoint_host(spec.base_url)
        self._count(target, kind, reason, spec, host)
        key = self._key(spec)
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        request = self._client.build_request(
            "POST",
            spec.base_url.rstrip("/") + "/chat/completions",
            content=json.dumps(body).encode(),
            headers=headers,
        )
        deadline = asyncio.get_running_loop().time() + spec.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                upstream = await self._client.send(request, stream=True)
        except TimeoutError:
            raise _timed_out(host, spec) from None
        except httpx.HTTPError as exc:
            raise EscalationError(
                502,
                f"cannot reach the escalation endpoint {host}: {_redact(_describe(exc), key)}",
                "escalation_unreachable",
            ) from None
        content_type = upstream.headers.get("content-type", "application/json")
        if upstream.is_success and "text/event-stream" in content_type:
            stream = _relay(upstream, deadline, host, spec, key)
            return Response(
                upstream.status_code, headers=[("content-type", content_type)], stream=stream
            )
        try:
            async with asyncio.timeout_at(deadline):
                data = await _read(upstream)
        except TimeoutError:
            raise _timed_out(host, spec) from None
        except httpx.HTTPError as exc:
            raise EscalationError(
                502,
                f"the escalation endpoint {host} broke off its answer: "
                f"{_redact(_describe(exc), key)}",
                "escalation_failed",
            ) from None
        finally:
            await upstream.aclose()
        if not upstream.is_success:
            raise _refused(upstream, data, host, key)
        return Response(upstream.status_code, data, [("content-type", content_type)])

    def _key(self, spec: EscalationSpec) -> str:
        if not spec.api_key_env:
            return ""
        key = self._environ.get(spec.api_key_env, "")
        if not key:
            raise EscalationError(
                502,
                f"escalation needs an API key in the environment variable "
                f"`{spec.api_key_env}`, which the controller's environment does not set",
                "escalation_key_missing",
            )
        return key

    def _count(
        self, target: str, kind: TargetKind, reason: Exhausted, spec: EscalationSpec, host: str
    ) -> None:
        obj = f"{kind}/{target}"
        self.escalated[obj] += 1
        log.info(
            "request escalated",
            extra={"target": obj, "reason": reason, "endpoint": host, "model": spec.model},
        )
        if obj in self._ongoing:
            self._ongoing[obj] += 1
            return
        self._ongoing[obj] = 1
        if self._events is not None:
            self._events.record(
                "warning",
                "Escalating",
                obj,
                f"{kind} {target}: no edge replica can serve ({reason}); requests go to "
                f"the escalation endpoint {host} (model {spec.model})",
            )


async def _read(upstream: httpx.Response) -> bytes:
    """The body, whole for a success, bounded for an error."""
    if upstream.is_success:
        return await upstream.aread()
    data = bytearray()
    async for piece in upstream.aiter_bytes():
        data += piece
        if len(data) >= MAX_ERROR_BYTES:
            break
    return bytes(data)


async def _relay(
    upstream: httpx.Response, deadline: float, host: str, spec: EscalationSpec, key: str
) -> AsyncIterator[bytes]:
    """The endpoint's server-sent events as they arrive; a failure ends them with an
    error event (the client already has part of the answer)."""
    pieces = upstream.aiter_bytes()
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    piece = await anext(pieces, None)
            except TimeoutError:
                yield _sse_error(str(_timed_out(host, spec)))
                return
            except httpx.HTTPError as exc:
                message = _redact(_describe(exc), key)
                yield _sse_error(f"the escalation endpoint {host} broke off its answer: {message}")
                return
            if piece is None:
                return
            yield piece
    finally:
        await upstream.aclose()


def _timed_out(host: str, spec: EscalationSpec) -> EscalationError:
    return EscalationError(
        504,
        f"the escalation endpoint {host} did not answer within {spec.timeout_s:g} s",
        "escalation_timeout",
    )


def _refused(upstream: httpx.Response, data: bytes, host: str, key: str) -> EscalationError:
    """An error answer from the endpoint, as the client's 502 (or 429)."""
    detail = data.decode("utf-8", "replace").strip()
    try:
        error = json.loads(data)["error"]
        detail = str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        pass
    detail = _redact(detail, key)[:MAX_MESSAGE_CHARS] or upstream.reason_phrase
    status = upstream.status_code
    message = f"the escalation endpoint {host} answered {status}: {detail}"
    if status == 429:
        retry_after = upstream.headers.get("retry-after")
        return EscalationError(429, message, "escalation_rate_limited", retry_after)
    return EscalationError(502, message, "escalation_failed")


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _redact(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text


def _sse_error(message: str) -> bytes:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"
