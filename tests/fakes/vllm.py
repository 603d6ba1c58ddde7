"""A stand-in for vLLM's OpenAI-compatible server (`vllm serve`, v0.6 and later).

Imitates: `GET /health` (200 with an empty body when healthy, 503 when told to be
unhealthy); `GET /version`; `GET /v1/models` (the one served model: `id` is the
served name, `root` the model it was started with, `owned_by: "vllm"`,
`max_model_len`); `POST /v1/chat/completions`. Started with an API key
(`vllm serve --api-key`), every `/v1` route wants `Authorization: Bearer KEY`
and answers 401 `{"error": "Unauthorized"}` without it; `/health` does not.
"""

from __future__ import annotations

from tests.fakes.openai_api import chat_completions
from tests.fakes.server import FakeServer, Reply, Request

VERSION = "0.8.5"


class FakeVLLM(FakeServer):
    """A vLLM server serving one model."""

    def __init__(self, model: str, served_name: str = "", api_key: str = "") -> None:
        super().__init__()
        self.model = model
        self.served_name = served_name or model
        self.api_key = api_key
        self.healthy = True

    def handle(self, request: Request) -> Reply:
        """Route a request to the endpoint it names."""
        if request.path == "/health":
            return Reply(body=b"") if self.healthy else Reply.text("", 503)
        if request.path == "/version":
            return Reply.json({"version": VERSION})
        authorized = request.headers.get("authorization") == f"Bearer {self.api_key}"
        if request.path.startswith("/v1/") and self.api_key and not authorized:
            return Reply.json({"error": "Unauthorized"}, 401)
        if (request.method, request.path) == ("GET", "/v1/models"):
            return Reply.json(
                {
                    "object": "list",
                    "data": [
                        {
                            "id": self.served_name,
                            "object": "model",
                            "created": 1735689600,
                            "owned_by": "vllm",
                            "root": self.model,
                            "parent": None,
                            "max_model_len": 4096,
                            "permission": [],
                        }
                    ],
                }
            )
        if (request.method, request.path) == ("POST", "/v1/chat/completions"):
            return chat_completions(request, [self.served_name], "vllm")
        return super().handle(request)
