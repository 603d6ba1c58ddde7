"""The gateway's HTTP server on 127.0.0.1, driven by a raw HTTP/1.1 client: requests as the
handler sees them, keep-alive and pipelining, streamed answers, malformed requests, clients
that go away, HTTPS with a certificate renewed in place, and a graceful close."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from edgefleet_dataplane import http_server
from edgefleet_dataplane.http_server import HttpServer, Request, Response
from orchestrator.trust.ca import ClusterCa

WAIT_S = 10.0
"""A bound on waiting for something that must happen (never a timing assertion)."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    pieces: list[bytes] = field(default_factory=list)
    """The chunks of a chunked body, as they were framed."""


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    """One HTTP/1.1 response: Content-Length or chunked."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    answer = Answer(int(status_line.split()[1]), headers, b"")
    if headers.get("transfer-encoding") == "chunked":
        while size := int(await asyncio.wait_for(reader.readline(), WAIT_S), 16):
            answer.pieces.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readexactly(2)
        answer.body = b"".join(answer.pieces)
    else:
        answer.body = await reader.readexactly(int(headers.get("content-length", "0")))
    return answer


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def serve(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Callable[[HttpServer, int], Awaitable[None]]], None]:
    """Run `scenario(server, port)` against a server of `handler` on 127.0.0.1."""

    def run(scenario: Callable[[HttpServer, int], Awaitable[None]]) -> None:
        async def main() -> None:
            server = HttpServer(handler)
            port = await server.start("127.0.0.1", 0)
            try:
                await scenario(server, port)
            finally:
                await server.close()

        asyncio.run(main())

    return run


async def echo(request: Request) -> Response:
    """The request as the handler saw it, as JSON-ish text."""
    seen = f"{request.method} {request.path} {sorted(request.headers.items())} {request.body!r}"
    return Response(200, seen.encode(), [("content-type", "text/plain"), ("x-seen", "1")])


# -- requests and keep-alive ---------------------------------------------------------------


def test_requests_reach_the_handler_whole_and_keep_alive_serves_pipelined_requests() -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        first = post("/v1/chat/completions?x=1", b'{"a": 1}', "X-Request-ID: r1", "X-Dup: a")
        second = post("/second", b"two", "X-Dup: b", "X-Dup: c")
        writer.write(first + second)  # pipelined: both before any answer
        one, two = await read_answer(reader), await read_answer(reader)
        writer.write(get("/third"))
        three = await read_answer(reader)
        writer.close()
        assert (one.status, two.status, three.status) == (200, 200, 200)
        assert one.body.startswith(b"POST /v1/chat/completions?x=1 ")
        assert b"('x-request-id', 'r1')" in one.body
        assert one.body.endswith(b"b'{\"a\": 1}'")
        assert b"('x-dup', 'c')" in two.body, "a repeated header keeps its last value"
        assert three.body.startswith(b"GET /third ")
        assert three.body.endswith(b"b''")
        assert one.headers["server"] == "edgefleet"
        assert one.headers["x-seen"] == "1"
        assert one.headers["content-type"] == "text/plain"
        assert one.headers["content-length"] == str(len(one.body))

    serve(echo)(scenario)


def test_a_chunked_request_body_is_read_whole() -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        answer = await read_answer(reader)
        writer.close()
        assert answer.body.endswith(b"b'abcde'")

    serve(echo)(scenario)


def test_a_client_that_expects_100_continue_is_asked_for_its_body() -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/big", b"", "Expect: 100-continue").replace(b"Length: 0", b"Length: 4"))
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"body")
        answer = await read_answer(reader)
        writer.close()
        assert answer.status == 200
        assert answer.body.endswith(b"b'body'")

    serve(echo)(scenario)


def test_a_handler_that_raises_gives_a_500_and_the_connection_serves_on() -> None:
    async def handler(request: Request) -> Response:
        if request.path == "/bug":
            raise RuntimeError("a bug")
        return await echo(request)

    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/bug"))
        failed = await read_answer(reader)
        writer.write(get("/fine"))
        fine = await read_answer(reader)
        writer.close()
        assert failed.status == 500
        assert failed.body == b"internal error\n"
        assert fine.status == 200

    serve(handler)(scenario)


# -- malformed requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"NOT AN HTTP REQUEST\r\n\r\n", b"bad request: "),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n", b"Content-Length"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", b"header"),
        (
            b"GET /" + b"a" * (http_server.MAX_LINE_BYTES + 10) + b" HTTP/1.1\r\n\r\n",
            b"bad request",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
            b"bad request",
        ),
    ],
    ids=["request-line", "content-length", "header-name", "line-too-long", "chunk-size"],
)
def test_a_malformed_request_gets_a_400_with_the_reason_and_the_connection_closes(
    raw: bytes, reason: bytes
) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        answer = await read_answer(reader)
        rest = await asyncio.wait_for(reader.read(), WAIT_S)
        writer.close()
        assert answer.status == 400, answer
        assert answer.body.startswith(b"bad request: ")
        assert reason.lower() in answer.body.lower()
        assert answer.headers["content-type"] == "text/plain"
        assert answer.headers["server"] == "edgefleet"
        assert rest == b"", "the connection is closed after a malformed request"

    serve(echo)(scenario)


def test_a_body_over_the_limit_is_a_413_without_reading_it() -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        too_big = http_server.MAX_BODY_BYTES + 1
        writer.write(f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {too_big}\r\n\r\n".encode())
        answer = await read_answer(reader)
        writer.close()
        assert answer.status == 413
        assert answer.body == f"request body over {http_server.MAX_BODY_BYTES} bytes\n".encode()
        assert answer.headers["connection"] == "close"

    serve(echo)(scenario)


def test_a_chunked_body_growing_over_the_limit_is_a_413(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_server, "MAX_BODY_BYTES", 16)

    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"10\r\n" + b"x" * 16 + b"\r\n10\r\n" + b"y" * 16 + b"\r\n0\r\n\r\n")
        answer = await read_answer(reader)
        writer.close()
        assert answer.status == 413

    serve(echo)(scenario)


def test_a_body_that_does_not_arrive_is_a_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_server, "BODY_TIMEOUT_S", 0.2)

    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        answer = await read_answer(reader)
        writer.close()
        assert answer.status == 408
        assert b"did not arrive" in answer.body

    serve(echo)(scenario)


# -- streamed answers and clients that go away -------------------------------------------


def test_a_stream_goes_out_piece_by_piece_as_it_comes() -> None:
    gate = asyncio.Event()

    async def pieces() -> AsyncIterator[bytes]:
        yield b"data: one\n\n"
        await gate.wait()  # the second piece exists only once the client has the first
        yield b""  # empty pieces are skipped, not sent as the end of the stream
        yield b"data: two\n\n"

    async def handler(request: Request) -> Response:
        return Response(200, headers=[("content-type", "text/event-stream")], stream=pieces())

    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/stream"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert b"transfer-encoding: chunked" in head.lower()
        assert b"content-type: text/event-stream" in head.lower()
        first = await asyncio.wait_for(reader.readuntil(b"one\n\n\r\n"), WAIT_S)
        assert first == b"b\r\ndata: one\n\n\r\n"
        gate.set()
        rest = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), WAIT_S)
        writer.close()
        assert rest == b"b\r\ndata: two\n\n\r\n0\r\n\r\n"

    serve(handler)(scenario)


def test_a_client_gone_mid_stream_closes_the_stream() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: tick\n\n"
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    async def handler(request: Request) -> Response:
        return Response(200, headers=[("content-type", "text/event-stream")], stream=endless())

    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/stream"))
        await asyncio.wait_for(reader.readuntil(b"tick"), WAIT_S)
        writer.close()
        await asyncio.wait_for(closed.wait(), WAIT_S)

    serve(handler)(scenario)


def test_a_client_gone_before_the_answer_cancels_the_handler() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        try:
            await asyncio.Event().wait()  # a long generation on a node
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(200)

    async def scenario(server: HttpServer, port: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/slow", b"{}"))
        await asyncio.wait_for(started.wait(), WAIT_S)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), WAIT_S)

    serve(handler)(scenario)


# -- closing -----------------------------------------------------------------------------


def test_close_lets_a_request_in_progress_finish_and_stops_listening() -> None:
    started, gate = asyncio.Event(), asyncio.Event()

    async def handler(request: Request) -> Response:
        if request.path == "/slow":
            started.set()
            await gate.wait()
        return Response(200, b"done")

    async def scenario(server: HttpServer, port: int) -> None:
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        idle_writer.write(get("/quick"))
        assert (await read_answer(idle_reader)).status == 200
        busy_writer.write(get("/slow"))
        await asyncio.wait_for(started.wait(), WAIT_S)
        closing = asyncio.create_task(server.close())
        assert await asyncio.wait_for(idle_reader.read(), WAIT_S) == b"", "idle: closed at once"
        await asyncio.sleep(0.2)  # the request is still in progress, well within the grace
        assert not closing.done()
        gate.set()
        answer = await read_answer(busy_reader)
        await asyncio.wait_for(closing, WAIT_S)
        busy_writer.close()
        idle_writer.close()
        assert (answer.status, answer.body) == (200, b"done")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    serve(handler)(scenario)


# -- HTTPS ---------------------------------------------------------------------------------


def serving_context(ca: ClusterCa, folder: Path, context: ssl.SSLContext | None = None) -> int:
    """Issue a certificate for 127.0.0.1 and load it into `context`; its serial number."""
    credentials = ca.server_credentials(["127.0.0.1"], timedelta(days=1))
    (folder / "gateway.crt").write_bytes(credentials.cert_pem)
    (folder / "gateway.key").write_bytes(credentials.key_pem)
    if context is not None:
        context.load_cert_chain(folder / "gateway.crt", folder / "gateway.key")
    return credentials.cert.serial_number


async def peer_serial(writer: asyncio.StreamWriter) -> int:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_https_serves_the_certificate_reloaded_into_its_context(tmp_path: Path) -> None:
    ca = ClusterCa.load_or_create(tmp_path / "ca", "test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    first_serial = serving_context(ca, tmp_path, context)
    trusting = ssl.create_default_context(cadata=ca.cert_pem.decode())

    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusting)
        assert await peer_serial(writer) == first_serial
        writer.write(post("/v1/models", b"x"))
        assert (await read_answer(reader)).status == 200

        renewed_serial = serving_context(ca, tmp_path, context)  # renewal, in place
        new_reader, new_writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusting)
        assert await peer_serial(new_writer) == renewed_serial != first_serial
        new_writer.write(get("/after"))
        assert (await read_answer(new_reader)).status == 200
        writer.write(get("/still"))  # the connection made before the renewal serves on
        assert (await read_answer(reader)).status == 200

        plain_reader, plain_writer = await asyncio.open_connection("127.0.0.1", port)
        plain_writer.write(get("/plain"))
        assert not (await asyncio.wait_for(plain_reader.read(), WAIT_S)).startswith(b"HTTP/")
        for w in (writer, new_writer, plain_writer):
            w.close()

    async def main() -> None:
        server = HttpServer(echo)
        port = await server.start("127.0.0.1", 0, context)
        try:
            await scenario(server, port)
        finally:
            await server.close()

    asyncio.run(main())


def test_close_cancels_a_request_that_outlasts_the_grace() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(request: Request) -> Response:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response(200)

    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/endless"))
        await asyncio.wait_for(started.wait(), WAIT_S)
        await asyncio.wait_for(server.close(grace_s=0.1), WAIT_S)
        assert cancelled.is_set()
        assert await asyncio.wait_for(reader.read(), WAIT_S) == b""
        writer.close()

    serve(handler)(scenario)
