"""Passing OpenAI chat-completions requests straight to a loaded model's runtime.

The gateway sends requests for a model alias (not an agent) here. The body is
forwarded as the client wrote it, with `model` set to the name the runtime
expects; the response bytes stream back as the runtime sent them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from node_agent.admission import Admission
from node_agent.errors import InvalidRequest, RuntimeUnavailable
from node_agent.metrics import NodeMetrics
from node_agent.models import ModelManager

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class ProxyPart:
    """One piece of the runtime's response: the status and type come with the first."""

    data: bytes
    http_status: int = 0
    content_type: str = ""


def rewrite_body(body: bytes, model: str) -> bytes:
    """The request body with `model` replaced; InvalidRequest when it is not a JSON object."""
    try:
        parsed: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request body is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if not isinstance(parsed.get("messages"), list) or not parsed["messages"]:
        raise InvalidRequest("`messages` must be a non-empty list")
    parsed["model"] = model
    return json.dumps(parsed, separators=(",", ":")).encode()


class ModelProxy:
    """Forwards chat-completions requests to the runtimes of loaded models."""

    def __init__(self, models: ModelManager, admission: Admission, metrics: NodeMetrics) -> None:
        self._models = models
        self._admission = admission
        self._metrics = metrics
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

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
                    request = self._client.build_request(
                        "POST",
                        f"{endpoint.base_url}/chat/completions",
                        content=payload,
                        headers={
                            "content-type": "application/json",
                            "authorization": f"Bearer {endpoint.api_key}",
                        },
                        timeout=httpx.Timeout(
                            max(deadline - time.monotonic(), 0.001), connect=CONNECT_TIMEOUT_S
                        ),
                    )
                    try:
                        response = await self._client.send(request, stream=True)
                    except httpx.HTTPError as exc:
                        raise RuntimeUnavailable(
                            f"the runtime of model `{alias}` did not answer: {exc!r}"
                        ) from exc
                    try:
                        first = True
                        chunks = _raw(response, alias)
                        async for data in chunks:
                            if first:
                                first = False
                                waited = time.monotonic() - started
                                load.observe_latency(waited * 1000)
                                self._metrics.first_token.labels(label).observe(waited)
                                yield ProxyPart(
                                    data,
                                    response.status_code,
                                    response.headers.get("content-type", ""),
                                )
                            else:
                                yield ProxyPart(data)
                        if first:  # an empty body still carries its status
                            yield ProxyPart(
                                b"", response.status_code, response.headers.get("content-type", "")
                            )
                    finally:
                        await response.aclose()
                outcome = "ok" if response.status_code < 400 else f"http_{response.status_code}"
            finally:
                self._metrics.requests.labels(label, outcome).inc()
                self._metrics.latency.labels(label).observe(time.monotonic() - started)

    async def close(self) -> None:
        """Close the connections to the runtimes."""
        await self._client.aclose()


async def _raw(response: httpx.Response, alias: str) -> AsyncIterator[bytes]:
    try:
        async for data in response.aiter_raw():
            yield data
    except httpx.HTTPError as exc:
        raise RuntimeUnavailable(f"the runtime of model `{alias}` broke off: {exc!r}") from exc
