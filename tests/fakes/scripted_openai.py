"""An OpenAI-compatible chat-completions server that answers from a script.

Agent tests need a model that does exactly what the test says: call this function
with these arguments, then say that. `ScriptedOpenAI` listens on 127.0.0.1 (port 0)
in the test's own event loop and answers each `POST /v1/chat/completions` with the
next `Turn` of its script: text, tool calls or both, as a `chat.completion` object
or, when the request says `stream: true`, as server-sent `chat.completion.chunk`
events ending in `data: [DONE]`. It records every request body it received.
`GET /v1/models` lists its one model, so the node's `openai` runtime can use it.

A turn can hold its answer (before it, or after its first streamed piece) until the
test sets an event, which lets a test look at what a client did in between; while
it holds, the server watches the connection and records a client that goes away.
With `empty_stream_with_tools`, a streamed request that offers tools gets an empty
200, as llama.cpp's function-calling chat format answers it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Call:
    """A function call the scripted model makes."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    """A mapping (sent as JSON) or the raw arguments string a model produced."""
    id: str = ""
    """Empty: `call_N`, numbered across the server's life."""


@dataclass(frozen=True)
class Turn:
    """One answer of the scripted model."""

    text: str = ""
    calls: Sequence[Call] = ()
    chunks: Sequence[str] | None = None
    """How `text` is split into stream events; default: one event per word."""
    finish_reason: str | None = None
    """Default: `tool_calls` when there are calls, else `stop`."""
    usage: tuple[int, int] | None = (10, 5)
    """(prompt, completion) tokens; None sends no usage."""
    status: int = 200
    """Anything else answers with an OpenAI error object and this status."""
    hold: asyncio.Event | None = None
    """Wait for this event before answering (an event never set: never answer)."""
    hold_after_first_piece: asyncio.Event | None = None
    """Streamed: wait for this event after the first chunk with text or a call in it."""


class ScriptedOpenAI:
    """A chat-completions server on 127.0.0.1 answering from a script; use `async with`."""

    def __init__(
        self,
        script: Iterable[Turn],
        *,
        model: str = "scripted-model",
        empty_stream_with_tools: bool = False,
    ) -> None:
        self.model = model
        self.empty_stream_with_tools = empty_stream_with_tools
        self.requests: list[dict[str, Any]] = []
        """Every chat-completions request body, in order."""
        self.disconnected = asyncio.Event()
        """Set when a client went away while a turn was held."""
        self.chunks_sent = 0
        """Stream events (`data:` lines) sent so far, `[DONE]` included."""
        self._script = list(script)
        self._call_ids = itertools.count(1)
        self._received = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT/v1`, what an OpenAI client takes as its base URL."""
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def unused_turns(self) -> int:
        """Turns of the script nobody asked for yet."""
        return len(self._script)

    async def wait_for_requests(self, count: int) -> None:
        """Return once `count` chat-completions requests have arrived."""
        async with self._received:
            await self._received.wait_for(lambda: len(self.requests) >= count)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    # --- HTTP ----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, path, _ = request_line.split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, value in (line.split(":", 1) for line in header_lines if ":" in line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if method == "POST" and path == "/v1/chat/completions":
                request = json.loads(body)
                async with self._received:
                    self.requests.append(request)
                    self._received.notify_all()
                await self._answer(request, reader, writer)
            elif method == "GET" and path == "/v1/models":
                # What an OpenAI-compatible runtime adapter checks before it uses the server.
                listed = {"id": self.model, "object": "model", "created": 0, "owned_by": "script"}
                await self._send_json(writer, 200, {"object": "list", "data": [listed]})
            else:
                await self._send_json(writer, 404, _error(f"no route {method} {path}"))
        except (ConnectionError, asyncio.IncompleteReadError):
            self.disconnected.set()
        finally:
            writer.close()

    async def _answer(
        self, request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not self._script:
            await self._send_json(writer, 500, _error("the script has no more turns"))
            return
        turn = self._script.pop(0)
        if turn.hold is not None and not await self._hold(turn.hold, reader):
            return
        if turn.status != 200:
            await self._send_json(writer, turn.status, _error(f"scripted HTTP {turn.status}"))
            return
        if not request.get("stream"):
            await self._send_json(writer, 200, self._completion(turn))
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        if self.empty_stream_with_tools and request.get("tools"):
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        for index, chunk in enumerate(self._chunks(turn, include_usage)):
            writer.write(b"data: " + chunk + b"\n\n")
            await writer.drain()
            self.chunks_sent += 1
            # Chunk 0 only opens the assistant message; chunk 1 is the first piece.
            hold = turn.hold_after_first_piece if index == 1 else None
            if hold is not None and not await self._hold(hold, reader):
                return

    async def _hold(self, event: asyncio.Event, reader: asyncio.StreamReader) -> bool:
        """Wait for `event`; False (and `disconnected` set) if the client goes away first."""
        released = asyncio.ensure_future(event.wait())
        gone = asyncio.ensure_future(reader.read(1))  # b"" at end of stream: the client closed
        done, pending = await asyncio.wait({released, gone}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if gone in done:
            self.disconnected.set()
            return False
        return True

    async def _send_json(self, writer: asyncio.StreamWriter, status: int, value: object) -> None:
        body = json.dumps(value).encode()
        writer.write(
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    # --- OpenAI objects ------------------------------------------------------------------

    def _tool_calls(self, turn: Turn) -> list[dict[str, Any]]:
        return [
            {
                "id": call.id or f"call_{next(self._call_ids)}",
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": call.arguments
                    if isinstance(call.arguments, str)
                    else json.dumps(call.arguments),
                },
            }
            for call in turn.calls
        ]

    def _completion(self, turn: Turn) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
        if turn.calls:
            message["tool_calls"] = self._tool_calls(turn)
        completion: dict[str, Any] = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(turn)}],
        }
        if turn.usage is not None:
            completion["usage"] = _usage(turn.usage)
        return completion

    def _chunks(self, turn: Turn, include_usage: bool) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-scripted",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        pieces = list(turn.chunks) if turn.chunks is not None else _words(turn.text)
        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in pieces]
        events += [
            chunk({"tool_calls": [{"index": index, **call}]})
            for index, call in enumerate(self._tool_calls(turn))
        ]
        events.append(chunk({}, _finish(turn)))
        if include_usage and turn.usage is not None:
            events.append({**chunk({}), "choices": [], "usage": _usage(turn.usage)})
        return [json.dumps(event).encode() for event in events] + [b"[DONE]"]


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [word if i == 0 else " " + word for i, word in enumerate(words)] if text else []


def _finish(turn: Turn) -> str:
    return turn.finish_reason or ("tool_calls" if turn.calls else "stop")


def _usage(usage: tuple[int, int]) -> dict[str, int]:
    prompt, completion = usage
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": sum(usage)}


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}
