"""Escalation: what no edge replica can serve goes to the deployment's cloud endpoint.

A request escalates only when the router says the edge is exhausted (no ready
replica, every circuit open, every replica refused or failed, queues full, retry
budget spent) and nothing has started: a bad request, a spent deadline or an
unknown outcome (an answer or a tool had started) never escalates. The request
goes to `{base_url}/chat/completions` with the escalation's `model`; an agent's
instructions lead as a system message (its tools stay on the edge). The API key
comes from the environment of the gateway's host and appears in no log, event or
response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiohttp

from edgefleet_contract.routing import EscalationEndpoint, TargetKind
from edgefleet_dataplane.http_server import Response
from edgefleet_dataplane.openai_wire import sse_error
from edgefleet_dataplane.route_error import Exhausted, RouteError

log = logging.getLogger(__name__)

ESCALATION_NODE = "escalation"
"""What `X-EdgeFleet-Node` says of an escalated answer."""
ESCALATED_HEADER = "x-edgefleet-escalated"
"""Why the request escalated (a `RouteError.exhausted` reason)."""
AGENT_ONLY_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")
"""An agent's tools run only on the edge: their fields do not go to the endpoint."""
MAX_ERROR_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 300


class EventRecorder(Protocol):
    """Where escalation episodes are recorded (the controller's event log)."""

    def record(
        self, severity: Literal["info", "warning", "error"], reason: str, obj: str, message: str
    ) -> object:
        """Record one event about `obj` (e.g. `agent/NAME`)."""
        ...


class EscalationError(Exception):
    """The escalation endpoint could not answer; `status` is what the client gets."""

    def __init__(
        self, status: int, message: str, code: str, retry_after: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


def escalation_reason(error: RouteError, endpoint: EscalationEndpoint | None) -> Exhausted | None:
    """Why the request goes to the escalation endpoint, or None when it must not."""
    return error.exhausted if endpoint is not None else None


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
    """Sends escalated requests over one shared HTTP client (aiohttp's); counts them by
    target."""

    def __init__(
        self, events: EventRecorder | None = None, environ: Mapping[str, str] = os.environ
    ) -> None:
        self._events = events
        self._environ = environ
        self._session: aiohttp.ClientSession | None = None
        self.escalated: Counter[str] = Counter()
        """Escalated requests since the gateway started, by `agent/NAME` or `model/ALIAS`."""
        self._ongoing: dict[str, int] = {}
        """Targets escalating now: escalated requests since the edge last served them."""

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that runs the gateway.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Deadlines are the escalation's `timeout`, enforced per request below.
                timeout=aiohttp.ClientTimeout(total=None),
                # Proxy settings from the environment apply, as for any HTTP client.
                trust_env=True,
            )
        return self._session

    async def close(self) -> None:
        """Close the shared client and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

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
        endpoint: EscalationEndpoint,
        body: dict[str, Any],
        *,
        target: str,
        kind: TargetKind,
        reason: Exhausted,
    ) -> Response:
        """Send one request to the endpoint; its answer (status, content type, body or
        event stream), or EscalationError with the status to answer instead."""
        host = endpoint_host(endpoint.base_url)
        self._count(target, kind, reason, endpoint, host)
        key = self._key(endpoint)
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        url = endpoint.base_url.rstrip("/") + "/chat/completions"
        deadline = asyncio.get_running_loop().time() + endpoint.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                upstream = await self._client().post(
                    url, data=json.dumps(body).encode(), headers=headers
                )
        except TimeoutError:
            raise _timed_out(host, endpoint) from None
        except aiohttp.ClientError as exc:
            raise EscalationError(
                502,
                f"cannot reach the escalation endpoint {host}: {_redact(_describe(exc), key)}",
                "escalation_unreachable",
            ) from None
        content_type = upstream.headers.get("content-type", "application/json")
        if _is_success(upstream) and "text/event-stream" in content_type:
            stream = _relay(upstream, deadline, host, endpoint, key)
            return Response(
                upstream.status, headers=[("content-type", content_type)], stream=stream
            )
        try:
            async with asyncio.timeout_at(deadline):
                data = await _read(upstream)
        except TimeoutError:
            raise _timed_out(host, endpoint) from None
        except aiohttp.ClientError as exc:
            raise EscalationError(
                502,
                f"the escalation endpoint {host} broke off its answer: "
                f"{_redact(_describe(exc), key)}",
                "escalation_failed",
            ) from None
        finally:
            upstream.release()
        if not _is_success(upstream):
            raise _refused(upstream, data, host, key)
        return Response(upstream.status, data, [("content-type", content_type)])

    def _key(self, endpoint: EscalationEndpoint) -> str:
        if not endpoint.api_key_env:
            return ""
        key = self._environ.get(endpoint.api_key_env, "")
        if not key:
            raise EscalationError(
                502,
                f"escalation needs an API key in the environment variable "
                f"`{endpoint.api_key_env}`, which the controller's environment does not set",
                "escalation_key_missing",
            )
        return key

    def _count(
        self,
        target: str,
        kind: TargetKind,
        reason: Exhausted,
        endpoint: EscalationEndpoint,
        host: str,
    ) -> None:
        obj = f"{kind}/{target}"
        self.escalated[obj] += 1
        log.info(
            "request escalated",
            extra={"target": obj, "reason": reason, "endpoint": host, "model": endpoint.model},
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
                f"the escalation endpoint {host} (model {endpoint.model})",
            )


def _is_success(upstream: aiohttp.ClientResponse) -> bool:
    return 200 <= upstream.status < 300


async def _read(upstream: aiohttp.ClientResponse) -> bytes:
    """The body, whole for a success, bounded for an error."""
    if _is_success(upstream):
        return await upstream.read()
    data = bytearray()
    while len(data) < MAX_ERROR_BYTES and (piece := await upstream.content.readany()):
        data += piece
    return bytes(data)


async def _relay(
    upstream: aiohttp.ClientResponse,
    deadline: float,
    host: str,
    endpoint: EscalationEndpoint,
    key: str,
) -> AsyncIterator[bytes]:
    """The endpoint's server-sent events as they arrive; a failure ends them with an
    error event (the client already has part of the answer)."""
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    piece = await upstream.content.readany()
            except TimeoutError:
                yield sse_error(str(_timed_out(host, endpoint)))
                return
            except aiohttp.ClientError as exc:
                message = _redact(_describe(exc), key)
                yield sse_error(f"the escalation endpoint {host} broke off its answer: {message}")
                return
            if not piece:
                return
            yield piece
    finally:
        upstream.release()


def _timed_out(host: str, endpoint: EscalationEndpoint) -> EscalationError:
    return EscalationError(
        504,
        f"the escalation endpoint {host} did not answer within {endpoint.timeout_s:g} s",
        "escalation_timeout",
    )


def _refused(upstream: aiohttp.ClientResponse, data: bytes, host: str, key: str) -> EscalationError:
    """An error answer from the endpoint, as the client's 502 (or 429)."""
    detail = data.decode("utf-8", "replace").strip()
    try:
        error = json.loads(data)["error"]
        detail = str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        pass
    detail = _redact(detail, key)[:MAX_MESSAGE_CHARS] or upstream.reason or ""
    status = upstream.status
    message = f"the escalation endpoint {host} answered {status}: {detail}"
    if status == 429:
        retry_after = upstream.headers.get("retry-after")
        return EscalationError(429, message, "escalation_rate_limited", retry_after)
    return EscalationError(502, message, "escalation_failed")


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _redact(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text
