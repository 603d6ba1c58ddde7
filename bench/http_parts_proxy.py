"""One forwarding proxy for bench/http_parts.py: an HTTP server, an HTTP client, an event loop.

    .venv-bench/bin/python bench/http_parts_proxy.py SERVER CLIENT LOOP PORT UPSTREAM_URL

SERVER: `h11` (the gateway's former server, bench/h11_server.py), `edgefleet`
(edgefleet_dataplane.http_server), `aiohttp` (aiohttp's low-level server),
`uvicorn` (uvicorn with httptools, an ASGI app). CLIENT: `aiohttp`, `httpx`,
`httpcore`. LOOP: `asyncio` or `uvloop`.

Each request's body is POSTed to UPSTREAM_URL as it came; the answer goes back with its
status and content type: whole, or piece by piece when it is an event stream. The
server listens on 127.0.0.1:PORT until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

SERVERS = ("h11", "edgefleet", "aiohttp", "uvicorn")
CLIENTS = ("aiohttp", "httpx", "httpcore")
LOOPS = ("asyncio", "uvloop")
POOL = 64
"""Upstream connections each client keeps (more than the bench's clients)."""
JSON = "application/json"


class Answer(Protocol):
    """The upstream's answer, as the proxy relays it."""

    status: int
    content_type: str

    def pieces(self) -> AsyncIterator[bytes]:
        """The body as it arrives (the connection goes back to the pool at the end)."""
        ...

    async def whole(self) -> bytes:
        """The whole body."""
        ...


class Forwarder(Protocol):
    """An HTTP client that POSTs to the upstream."""

    async def post(self, body: bytes) -> Answer:
        """Send `body`; the answer once its head has come."""
        ...


# -- clients -------------------------------------------------------------------------------


class AiohttpForwarder:
    def __init__(self, url: str) -> None:
        import aiohttp

        self._url = url
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL), skip_auto_headers=("User-Agent",)
        )

    async def post(self, body: bytes) -> Answer:
        response = await self._session.post(self._url, data=body, headers={"content-type": JSON})
        return _AiohttpAnswer(response)


class _AiohttpAnswer:
    def __init__(self, response: Any) -> None:
        self._response = response
        self.status = response.status
        self.content_type = response.headers.get("content-type", JSON)

    async def pieces(self) -> AsyncIterator[bytes]:
        async with self._response:
            async for piece in self._response.content.iter_any():
                yield piece

    async def whole(self) -> bytes:
        async with self._response:
            return bytes(await self._response.read())


class HttpxForwarder:
    def __init__(self, url: str) -> None:
        import httpx

        self._url = url
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL),
            timeout=None,
        )

    async def post(self, body: bytes) -> Answer:
        request = self._client.build_request(
            "POST", self._url, content=body, headers={"content-type": JSON}
        )
        return _HttpxAnswer(await self._client.send(request, stream=True))


class _HttpxAnswer:
    def __init__(self, response: Any) -> None:
        self._response = response
        self.status = response.status_code
        self.content_type = response.headers.get("content-type", JSON)

    async def pieces(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.aiter_raw():
                yield piece
        finally:
            await self._response.aclose()

    async def whole(self) -> bytes:
        try:
            return bytes(await self._response.aread())
        finally:
            await self._response.aclose()


class HttpcoreForwarder:
    def __init__(self, url: str) -> None:
        import httpcore

        self._url = url
        self._pool = httpcore.AsyncConnectionPool(max_connections=POOL)

    async def post(self, body: bytes) -> Answer:
        context = self._pool.stream("POST", self._url, content=body, headers={"content-type": JSON})
        response = await context.__aenter__()
        return _HttpcoreAnswer(context, response)


class _HttpcoreAnswer:
    def __init__(self, context: Any, response: Any) -> None:
        self._context = context
        self._response = response
        self.status = response.status
        headers = {k.lower(): v for k, v in response.headers}
        self.content_type = headers.get(b"content-type", JSON.encode()).decode("latin-1")

    async def pieces(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.aiter_stream():
                yield piece
        finally:
            await self._context.__aexit__(None, None, None)

    async def whole(self) -> bytes:
        try:
            return bytes(await self._response.aread())
        finally:
            await self._context.__aexit__(None, None, None)


def forwarder(client: str, url: str) -> Forwarder:
    """The named client, posting to `url`."""
    kinds: dict[str, Callable[[str], Forwarder]] = {
        "aiohttp": AiohttpForwarder,
        "httpx": HttpxForwarder,
        "httpcore": HttpcoreForwarder,
    }
    return kinds[client](url)


def is_stream(answer: Answer) -> bool:
    return answer.content_type.startswith("text/event-stream")


# -- servers -------------------------------------------------------------------------------


async def serve_edgefleet_shape(module: Any, fwd: Forwarder, port: int) -> Callable[[], Any]:
    """The h11 server and the gateway's server share one handler shape."""

    async def handle(request: Any) -> Any:
        answer = await fwd.post(request.body)
        headers = [("content-type", answer.content_type)]
        if is_stream(answer):
            return module.Response(answer.status, headers=headers, stream=answer.pieces())
        return module.Response(answer.status, await answer.whole(), headers)

    server = module.HttpServer(handle)
    await server.start("127.0.0.1", port)
    close: Callable[[], Any] = server.close
    return close


async def serve_aiohttp(fwd: Forwarder, port: int) -> Callable[[], Any]:
    from aiohttp import web

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        answer = await fwd.post(await request.read())
        if not is_stream(answer):
            body = await answer.whole()
            return web.Response(
                status=answer.status, body=body, headers={"content-type": answer.content_type}
            )
        response = web.StreamResponse(
            status=answer.status, headers={"content-type": answer.content_type}
        )
        await response.prepare(request)
        async for piece in answer.pieces():
            await response.write(piece)
        await response.write_eof()
        return response

    server = web.Server(handle)
    listener = await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)

    async def close() -> None:
        listener.close()
        await server.shutdown(1.0)

    return close


async def serve_uvicorn(fwd: Forwarder, port: int) -> Callable[[], Any]:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = await fwd.post(body)
        headers = [(b"content-type", answer.content_type.encode("latin-1"))]
        if is_stream(answer):
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            async for piece in answer.pieces():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = await answer.whole()
        headers.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        loop="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn has only a flag)
        await asyncio.sleep(0.01)

    async def close() -> None:
        server.should_exit = True
        await task

    return close


async def main(server: str, client: str, port: int, upstream: str) -> None:
    fwd = forwarder(client, upstream)
    starters: dict[str, Callable[[], Awaitable[Callable[[], Any]]]] = {
        "h11": lambda: serve_edgefleet_shape(__import__("h11_server"), fwd, port),
        "edgefleet": lambda: serve_edgefleet_shape(
            __import__("edgefleet_dataplane.http_server", fromlist=["HttpServer"]), fwd, port
        ),
        "aiohttp": lambda: serve_aiohttp(fwd, port),
        "uvicorn": lambda: serve_uvicorn(fwd, port),
    }
    close = await starters[server]()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await close()


def run() -> int:
    server, client, loop_kind, port, upstream = sys.argv[1:6]
    if server not in SERVERS or client not in CLIENTS or loop_kind not in LOOPS:
        print(__doc__, file=sys.stderr)
        return 2
    coroutine = main(server, client, int(port), upstream)
    if loop_kind == "uvloop":
        import uvloop

        uvloop.run(coroutine)
    else:
        asyncio.run(coroutine)
    return 0


if __name__ == "__main__":
    sys.exit(run())
