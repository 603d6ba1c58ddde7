"""The gateway's former HTTP/1.1 server (h11 on asyncio streams), kept unchanged as the
baseline that bench/http_parts.py measures the other candidates against.

Keep-alive connections, requests with a `Content-Length` body (bounded), whole
responses and streamed ones (chunked transfer encoding). One handler coroutine
per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import h11

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
SERVER_NAME = b"edgefleet"
IDLE_TIMEOUT_S = 75.0
"""An idle keep-alive connection is closed after this long."""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, its body read whole."""

    method: str
    path: str
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


class HttpServer:
    """Serves `handler` on HOST:PORT until closed."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen (HTTPS with `tls`); returns the port (useful when `port` is 0)."""
        self._server = await asyncio.start_server(
            self._connection,
            host,
            port,
            limit=MAX_HEADER_BYTES,
            reuse_address=True,
            ssl=tls,
            ssl_handshake_timeout=10.0 if tls else None,
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end open connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    break
                response = await self._handler(request)
                await self._write(conn, writer, response)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except HttpError as exc:
            with contextlib.suppress(Exception):
                await self._write(
                    conn,
                    writer,
                    Response(exc.status, f"{exc}\n".encode(), [("content-type", "text/plain")]),
                )
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except h11.ProtocolError as exc:
            log.debug("HTTP protocol error", extra={"client": client, "error": str(exc)})
        finally:
            self._connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpError(exc.error_status_hint, f"bad request: {exc}") from exc
            if event is h11.NEED_DATA:
                timeout = IDLE_TIMEOUT_S if head is None else 30.0
                data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
                if not data and head is None and conn.their_state is h11.IDLE:
                    return None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
                length = _header(event.headers, b"content-length")
                if length is not None and int(length) > MAX_BODY_BYTES:
                    raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return Request(
                    method=head.method.decode("ascii"),
                    path=head.target.decode("latin-1"),
                    headers={k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers},
                    body=bytes(body),
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _write(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response
    ) -> None:
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        headers.append((b"server", SERVER_NAME))
        if response.stream is None:
            headers.append((b"content-length", str(len(response.body)).encode()))
            writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
            if response.body:
                writer.write(conn.send(h11.Data(data=response.body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            return
        # No length: h11 uses chunked encoding, and each piece goes out as it comes.
        writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)))
        await writer.drain()
        stream = response.stream
        try:
            async for piece in stream:
                if piece:
                    writer.write(conn.send(h11.Data(data=piece)))
                    await writer.drain()
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
