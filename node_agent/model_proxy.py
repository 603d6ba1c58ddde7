"""Passing OpenAI chat-completions requests straight to a loaded model's runtime.

The gateway sends requests for a model alias (not an agent) here. The body is
forwarded as the client wrote it (re-encoded only when `model` must change to the
name the runtime expects); the response bytes stream back as the runtime sent them.
The HTTP client is aiohttp's (its C parser keeps the hop to the runtime to a
fraction of a millisecond; `bench/gateway.py` measures it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from node_agent.admission import Admission
from node_agent.errors import InvalidRequest, RuntimeUnavailable
from node_agent.metrics import NodeMetrics
from node_agent.models import ModelManager
from node_agent.runtimes.base import ModelEndpoint

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ProxyPart:
    """One piece of the runtime's response: the status and type come with the first."""

    data: bytes
    http_status: int = 0
    content_type: str = ""


def rewrite_body(body: bytes, model: str) -> bytes:
    """The request body with `model` set (the same bytes when it already is); InvalidRequest
    when it is not a JSON object with messages."""
    try:
        parsed: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request body is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if not isinstance(parsed.get("messages"), list) or not parsed["messages"]:
        raise InvalidRequest("`messages` must be a non-empty list")
    if parsed.get("model") == model:
        return body
    parsed["model"] = model
    return json.dumps(parsed, separators=(",", ":")).encode()


class ModelProxy:
    """Forwards chat-completions requests to the runtimes of loaded models."""

    def __init__(self, models: ModelManager, admission: Admission, metrics: NodeMetrics) -> None:
        self._models = models
        self._admission = admission
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that runs the node.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def forward(self, alias: str, body: bytes, timeout: float) -> AsyncIterator[ProxyPart]:
        """Send one request to the model's runtime and yield its response as it comes."""
        deadline = time.monotonic() + timeout
        label = f"model:{alias}"
        outcome = "error"
        async with self._admission.admit(alias, alias, agent=False) as load:
            started = time.monotonic()
            try:
                remaining = max(deadline - time.monotonic(), 0)
                async with self._models.use(alias, remaining) as endpoint:
                    payload = rewrite_body(body, endpoint.model)
                    status = 0
                    async for part in self._exchange(endpoint, payload, deadline, alias):
                        if part.http_status:
                            status = part.http_status
                            waited = time.monotonic() - started
                            load.observe_latency(waited * 1000)
                            self._metrics.first_token.labels(label).observe(waited)
                        yield part
                outcome = "ok" if status < 400 else f"http_{status}"
            finally:
                self._metrics.requests.labels(label, outcome).inc()
                self._metrics.latency.labels(label).observe(time.monotonic() - started)

    async def _exchange(
        self, endpoint: ModelEndpoint, payload: bytes, deadline: float, alias: str
    ) -> AsyncIterator[ProxyPart]:
        """One HTTP exchange with the runtime: the first part carries status and type."""
        headers = {
            "content-type": "application/json",
            "authorization": f"Bearer {endpoint.api_key}",
            "accept-encoding": "identity",
        }
        if not endpoint.reuse_connections:
            headers["connection"] = "close"
        limit = aiohttp.ClientTimeout(
            total=max(deadline - time.monotonic(), 0.001), sock_connect=CONNECT_TIMEOUT_S
        )
        try:
            response = await self._client().post(
                f"{endpoint.base_url}/chat/completions",
                data=payload,
                headers=headers,
                timeout=limit,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RuntimeUnavailable(
                f"the runtime of model `{alias}` did not answer: {exc!r}"
            ) from exc
        async with response:
            content_type = response.headers.get("content-type", "")
            first = True
            try:
                async for data in response.content.iter_any():
                    yield (
                        ProxyPart(data, response.status, content_type) if first else ProxyPart(data)
                    )
                    first = False
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise RuntimeUnavailable(
                    f"the runtime of model `{alias}` broke off: {exc!r}"
                ) from exc
            if first:  # an empty body still carries its status
                yield ProxyPart(b"", response.status, content_type)

    async def close(self) -> None:
        """Close the connections to the runtimes."""
        if self._session is not None:
            await self._session.close()
