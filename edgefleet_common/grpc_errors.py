"""Turning a servicer's exceptions into gRPC status codes, once for both APIs.

A handler raises; the decorator answers the call with the status code and message
its `classify` function gives for the exception, or INTERNAL (logged with its
traceback) for anything unforeseen. Cancellation and aborts pass through. Messages
are cut to a size every client accepts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc

Ctx: TypeAlias = Any
"""grpc.aio.ServicerContext (grpcio ships no type information)."""
Classify = Callable[[Exception], "tuple[grpc.StatusCode, str] | None"]

ANSWERED_KEY = "edgefleet-answered"
"""Trailing metadata on every status a handler chose: with it, a client tells a server that
answered UNAVAILABLE (e.g. its store cannot take writes) from a connection that broke."""

MAX_MESSAGE_BYTES = 4096
"""Longest status message sent, as it travels (percent-encoded in a trailer). A message may
quote a request's values, which can be megabytes; a client refuses trailers past 8-16 KiB
and would report that instead of the status."""

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def bounded(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """`message`, cut to at most about `limit` bytes once percent-encoded for its trailer."""
    size = 0
    for index, char in enumerate(message[: limit + 1]):  # each character takes a byte or more
        size += 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode())
        if size > limit:
            return f"{message[:index]} … [{len(message) - index} more characters]"
    return message


class StatusError(Exception):
    """An error that carries the gRPC status code to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ErrorMapping:
    """`unary` and `streaming` decorators for one API's handlers."""

    def __init__(self, classify: Classify, where: str, log: logging.Logger) -> None:
        """`where` completes "unexpected error …" (e.g. "on the node")."""
        self._classify = classify
        self._where = where
        self._log = log

    async def abort(self, context: Ctx, error: Exception) -> NoReturn:
        """Answer the call for `error`."""
        known = self._classify(error)
        if known is not None:
            code, message = known
            # Contexts of in-process calls (a node's own stub) have no trailers.
            mark = getattr(context, "set_trailing_metadata", None)
            if mark is not None:
                mark(((ANSWERED_KEY, "1"),))
            await context.abort(code, bounded(message))
        self._log.exception("unexpected error in an API call", exc_info=error)
        message = f"unexpected error {self._where}: {error!r}"
        await context.abort(grpc.StatusCode.INTERNAL, bounded(message))
        raise AssertionError("context.abort returned")  # it raises; this tells type checkers

    def unary(
        self, handler: Callable[[S, Req, Ctx], Awaitable[Resp]]
    ) -> Callable[[S, Req, Ctx], Awaitable[Resp]]:
        """Map a unary handler's errors to status codes."""

        @functools.wraps(handler)
        async def wrapped(service: S, request: Req, context: Ctx) -> Resp:
            try:
                return await handler(service, request, context)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await self.abort(context, exc)

        return wrapped

    def streaming(
        self, handler: Callable[[S, Req, Ctx], AsyncIterator[Resp]]
    ) -> Callable[[S, Req, Ctx], AsyncIterator[Resp]]:
        """Map a streaming handler's errors to status codes."""

        @functools.wraps(handler)
        async def wrapped(service: S, request: Req, context: Ctx) -> AsyncIterator[Resp]:
            try:
                async for item in handler(service, request, context):
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await self.abort(context, exc)

        return wrapped
