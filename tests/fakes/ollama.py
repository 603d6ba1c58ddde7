"""A stand-in for Ollama's REST API (docs/api.md, v0.5 and later).

Imitates: `GET /api/version`; `GET /api/tags` (models on disk); `POST /api/pull`
streaming NDJSON progress (`pulling manifest`, `pulling DIGEST` lines with
`digest`/`total`/`completed`, `verifying sha256 digest`, `writing manifest`,
`success`, or an `{"error": ...}` line for an unknown tag); `POST /api/chat`
with `messages: []` to load (`done_reason: "load"`) or, with `keep_alive: 0`,
unload (`done_reason: "unload"`) a model, and 404 for a model not on disk;
`GET /api/ps` (loaded models with `size`); the OpenAI-compatible `/v1/models`
and `/v1/chat/completions` (Ollama loads a model on demand there).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping

from tests.fakes.openai_api import chat_completions
from tests.fakes.server import FakeServer, Reply, Request

VERSION = "0.6.5"


def full(tag: str) -> str:
    """`name:tag`, with `latest` when the tag is left out (as Ollama names models)."""
    return tag if ":" in tag.rsplit("/", 1)[-1] else f"{tag}:latest"


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class FakeOllama(FakeServer):
    """Ollama with a registry to pull from (`library`), models on disk and loaded models."""

    def __init__(self, library: Mapping[str, int], on_disk: Mapping[str, int] | None = None):
        super().__init__()
        self.library = {full(t): size for t, size in library.items()}
        self.on_disk = {full(t): size for t, size in (on_disk or {}).items()}
        self.running: dict[str, int] = {}
        self.keep_alive: dict[str, object] = {}
        """The `keep_alive` of the last load of each model."""

    def handle(self, request: Request) -> Reply:
        """Route a request to the endpoint it names."""
        route = (request.method, request.path)
        if route == ("GET", "/api/version"):
            return Reply.json({"version": VERSION})
        if route == ("GET", "/api/tags"):
            return Reply.json({"models": [self._model(t, s) for t, s in self.on_disk.items()]})
        if route == ("GET", "/api/ps"):
            return Reply.json(
                {
                    "models": [
                        {
                            **self._model(t, s),
                            "expires_at": "2318-08-15T09:42:00Z",
                            "size_vram": 0,
                        }
                        for t, s in self.running.items()
                    ]
                }
            )
        if route == ("POST", "/api/pull"):
            return self._pull(request.json() or {})
        if route == ("POST", "/api/chat"):
            return self._chat(request.json() or {})
        if route == ("GET", "/v1/models"):
            return Reply.json(
                {
                    "object": "list",
                    "data": [
                        {"id": t, "object": "model", "owned_by": "library"} for t in self.on_disk
                    ],
                }
            )
        if route == ("POST", "/v1/chat/completions"):
            body = request.json() or {}
            tag = full(str(body.get("model", "")))
            if tag in self.on_disk:
                self.running.setdefault(tag, self.on_disk[tag])
            served = {*self.on_disk, *(t.removesuffix(":latest") for t in self.on_disk)}
            return chat_completions(request, served, "ollama")
        return super().handle(request)

    def _model(self, tag: str, size: int) -> dict[str, object]:
        return {
            "name": tag,
            "model": tag,
            "modified_at": "2025-01-01T00:00:00Z",
            "size": size,
            "digest": _digest(tag)[7:],
            "details": {"format": "gguf", "family": "llama", "quantization_level": "Q4_K_M"},
        }

    def _pull(self, body: dict[str, object]) -> Reply:
        tag = full(str(body.get("model") or body.get("name") or ""))
        stream = body.get("stream", True)

        def lines() -> Iterator[bytes]:
            yield _line({"status": "pulling manifest"})
            if tag not in self.library:
                yield _line({"error": "pull model manifest: file does not exist"})
                return
            size = self.library[tag]
            layers = {_digest(tag + "/weights"): size - 1000, _digest(tag + "/template"): 1000}
            for digest, total in layers.items():
                for completed in (0, total // 2, total):
                    yield _line(
                        {
                            "status": f"pulling {digest[7:19]}",
                            "digest": digest,
                            "total": total,
                            "completed": completed,
                        }
                    )
            for status in ("verifying sha256 digest", "writing manifest", "success"):
                yield _line({"status": status})
            self.on_disk[tag] = size

        if stream is False:
            events = [json.loads(b) for b in lines()]
            return Reply.json(events[-1], 200 if "error" not in events[-1] else 500)
        return Reply.stream(lines(), "application/x-ndjson")

    def _chat(self, body: dict[str, object]) -> Reply:
        tag = full(str(body.get("model", "")))
        if tag not in self.on_disk:
            return Reply.json({"error": f'model "{tag}" not found, try pulling it first'}, 404)
        keep_alive = body.get("keep_alive", "5m")
        answer: dict[str, object] = {
            "model": tag,
            "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": ""},
            "done": True,
        }
        if body.get("messages"):
            return Reply.json({**answer, "message": {"role": "assistant", "content": "hi"}})
        if keep_alive == 0:
            self.running.pop(tag, None)
            return Reply.json({**answer, "done_reason": "unload"})
        self.running[tag] = self.on_disk[tag]
        self.keep_alive[tag] = keep_alive
        return Reply.json({**answer, "done_reason": "load"})


def _line(event: dict[str, object]) -> bytes:
    return json.dumps(event).encode() + b"\n"
