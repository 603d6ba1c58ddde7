"""The gateway's HTTP/1.1 server: aiohttp's low-level server, with a handler of our own shape.

aiohttp parses (its C parser), keeps connections alive, pipelines, and writes
whole responses (`Content-Length`) and streamed ones (chunked transfer encoding,
for server-sent events, each piece sent as it comes). Around it: requests reach
the handler as a plain `Request` with the body read whole (bounded in size and
time); a malformed request gets a 400 with aiohttp's reason; a client that goes
away cancels its handler (and with it the request to the node). bench/http_parts.py
measured it beside the other candidates.

HTTPS uses the `ssl.SSLContext` given to `start` for every new connection, so a
certificate reloaded into that context (`load_cert_chain`) serves the next
handshake without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_LINE_BYTES = 16 * 1024
"""The longest request line, and the longest header field."""
MAX_HEADERS = 128
BODY_TIMEOUT_S = 30.0
"""The whole body must arrive within this long once the head has."""
IDLE_TIMEOUT_S = 75.0
"""An idle keep-alive connection is closed after this long."""
CLOSE_GRACE_S = 5.0
"""On close, requests in progress get this long to finish before they are cancelled."""
TLS_HANDSHAKE_TIMEOUT_S = 10.0
SERVER_NAME = "edgefleet"
TEXT_HEADERS = (("content-type", "text/plain"),)
_KNOWN = frozenset(HTTPStatus)


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, its body read whole."""

    method: str
    path: str
    """The request target as sent: path and query."""
    headers: dict[str, str]
    """Lower-case names; a repeated header keeps its last value."""
    body: bytes


@dataclass(slots=True)
class Response:
    """A whole response, or a streamed one when `stream` is set (then `body` is unused)."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = None


Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    """The request cannot be read: answered with `status` and the message as text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


PROTOCOL_SETTINGS: dict[str, Any] = {
    "keepalive_timeout": IDLE_TIMEOUT_S,
    "max_line_size": MAX_LINE_BYTES,
    "max_field_size": MAX_LINE_BYTES,
    "max_headers": MAX_HEADERS,
    "auto_decompress": False,  # the body goes on as the client sent it
    "access_log": None,
}
"""How aiohttp serves each connection."""


class _Connection(web.RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse in our words."""

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # Only the connection's own failures land here (malformed requests, clients gone
        # mid-answer): the client's doing, not the server's. Handler errors are logged
        # by HttpServer.
        log.debug(*args, **kwargs)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp cannot serve (e.g. cannot parse): `status` with the reason."""
        if request.writer.output_size > 0:
            raise ConnectionError("part of the answer was sent: the connection is closed")
        log.debug("cannot serve a request", extra={"status": status, "error": message or exc})
        reason = message or (HTTPStatus(status).phrase if status in _KNOWN else str(status))
        text = f"bad request: {reason}" if status == 400 else reason
        response = web.Response(
            status=status, body=f"{text}\n".encode(), headers=_headers(TEXT_HEADERS)
        )
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's low-level server with our connection handler."""

    def __call__(self) -> web.RequestHandler:
        return _Connection(self, loop=asyncio.get_running_loop(), **PROTOCOL_SETTINGS)


class HttpServer:
    """Serves `handler` on HOST:PORT until closed."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: web.Server | None = None
        self._listener: asyncio.Server | None = None

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen (HTTPS with `tls`); returns the port (useful when `port` is 0)."""
        self._server = _Server(self._serve, handler_cancellation=True)
        self._listener = await asyncio.get_running_loop().create_server(
            self._server,
            host,
            port,
            reuse_address=True,
            ssl=tls,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if tls else None,
        )
        return int(self._listener.sockets[0].getsockname()[1])

    async def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Stop listening, close idle connections at once, and give requests in progress
        `grace_s` to finish before cancelling them."""
        listener, self._listener = self._listener, None
        server, self._server = self._server, None
        if listener is not None:
            listener.close()
        if server is not None:
            server.pre_shutdown()
            await server.shutdown(grace_s)
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.wait_closed()

    async def _serve(self, raw: web.BaseRequest) -> web.StreamResponse:
        """aiohttp's request → our handler → aiohttp's response."""
        try:
            request = Request(
                method=raw.method,
                path=raw.raw_path,
                headers={
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw.raw_headers
                },
                body=await _read_body(raw),
            )
        except HttpError as exc:
            refused = web.Response(
                status=exc.status,
                body=f"{exc}\n".encode(),
                headers=_headers(TEXT_HEADERS),
            )
            refused.force_close()  # the rest of the request is not read
            return refused
        try:
            response = await self._handler(request)
        except Exception:  # the handler's bug: the client still gets an answer
            log.exception("HTTP handler failed", extra={"path": request.path})
            response = Response(500, b"internal error\n", list(TEXT_HEADERS))
        if response.stream is None:
            return web.Response(
                status=response.status, body=response.body, headers=_headers(response.headers)
            )
        return await _stream(raw, response.status, response.headers, response.stream)


async def _read_body(raw: web.BaseRequest) -> bytes:
    """The whole body; HttpError when it is too big, too slow or malformed."""
    length = raw.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
    if not raw.body_exists:
        return b""
    if raw.headers.get("expect", "").lower() == "100-continue" and raw.version >= (1, 1):
        # The client (curl, for large bodies) waits for this before it sends the body.
        await raw.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        raw.writer.output_size = 0  # an interim answer: the real one is still to come
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while piece := await raw.content.readany():
                body += piece
                if len(body) > MAX_BODY_BYTES:
                    raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
    except TimeoutError:
        raise HttpError(
            408, f"the request body did not arrive within {BODY_TIMEOUT_S:g} s"
        ) from None
    except web.RequestPayloadError as exc:
        raise HttpError(400, f"bad request body: {exc}") from None
    return bytes(body)


async def _stream(
    raw: web.BaseRequest, status: int, headers: list[tuple[str, str]], stream: AsyncIterator[bytes]
) -> web.StreamResponse:
    """Send the head at once, then each piece as it comes (chunked); the stream is closed
    whatever happens (a client gone, a cancelled handler), which ends the work behind it."""
    response = web.StreamResponse(status=status, headers=_headers(headers))
    try:
        await response.prepare(raw)
        async for piece in stream:
            if piece:
                await response.write(piece)
        await response.write_eof()
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
    return response


def _headers(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [*pairs, ("server", SERVER_NAME)]
