"""The OpenAI chat-completions API (v1) as every runtime here serves it, and a plain endpoint.

`chat_completions` answers `POST .../chat/completions` the way the OpenAI API
reference describes: a `chat.completion` object, or with `stream: true`
server-sent events of `chat.completion.chunk` objects ending in `data: [DONE]`.
The text names the server and model, so a test can tell who answered.

`FakeOpenAIServer` imitates an external OpenAI-compatible endpoint: `GET /v1/models`
and `POST /v1/chat/completions`, both requiring `Authorization: Bearer KEY`
when it has a key, answering 401 with an OpenAI error object otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator

from tests.fakes.server import FakeServer, Reply, Request


def reply_text(server: str, model: str) -> str:
    """What a stand-in's model says, so a test can check who answered."""
    return f"Hello from {server} model {model}"


def openai_error(message: str, status: int, code: str = "") -> Reply:
    """An OpenAI-style error object."""
    return Reply.json(
        {"error": {"message": message, "type": "invalid_request_error", "code": code or None}},
        status,
    )


def chat_completions(request: Request, served: Collection[str], server: str) -> Reply:
    """A chat completion (or its SSE stream) from a model in `served`; 404 for any other."""
    body = request.json() or {}
    model = body.get("model")
    if model not in served:
        return openai_error(f"The model `{model}` does not exist", 404, "model_not_found")
    if not body.get("messages"):
        return openai_error("`messages` must not be empty", 400)
    text = reply_text(server, str(model))
    created = int(time.time())
    if not body.get("stream"):
        return Reply.json(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
            }
        )

    def events() -> Iterator[bytes]:
        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            payload = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""})
        for i, word in enumerate(text.split(" ")):
            yield chunk({"content": word if i == 0 else " " + word})
        yield chunk({}, "stop")
        yield b"data: [DONE]\n\n"

    return Reply.stream(events(), "text/event-stream")


class FakeOpenAIServer(FakeServer):
    """An external OpenAI-compatible endpoint with a model list and an optional API key."""

    def __init__(self, models: Collection[str], api_key: str = "") -> None:
        super().__init__()
        self.models = list(models)
        self.api_key = api_key

    def handle(self, request: Request) -> Reply:
        """`GET /v1/models`, `POST /v1/chat/completions`."""
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return openai_error("Incorrect API key provided", 401, "invalid_api_key")
        if request.method == "GET" and request.path == "/v1/models":
            return Reply.json(
                {
                    "object": "list",
                    "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                        for m in self.models
                    ],
                }
            )
        if request.method == "POST" and request.path == "/v1/chat/completions":
            return chat_completions(request, self.models, "openai")
        return super().handle(request)
