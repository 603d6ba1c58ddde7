"""Requests whose bytes are not the message their method takes: INVALID_ARGUMENT.

gRPC decodes a request before any handler runs; when decoding fails it answers
UNKNOWN and logs a traceback per request, so anyone who can reach the port could
fill the log. This interceptor gives every unary-request method a deserializer
that turns undecodable bytes into a `Malformed` marker, which the method answers
with INVALID_ARGUMENT and one warning line, before its handler is called.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from edgefleet_common.grpc_checks import Handler, checked

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Malformed:
    """What a request that could not be decoded becomes."""

    error: str


def _lenient(deserializer: Callable[[bytes], object]) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Malformed(str(exc))

    return deserialize


async def _refuse(method: str, request: Malformed, context: Any) -> NoReturn:
    log.warning(
        "malformed request refused",
        extra={"method": method, "peer": context.peer(), "error": request.error},
    )
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"{method}: the request is not a valid message for this method ({request.error})",
    )
    raise AssertionError("context.abort returned")  # it raises; this tells type checkers


def guard(method: str, handler: Handler) -> Handler:
    """`handler` with a lenient deserializer and a check before its behaviour."""
    if handler is None or handler.request_streaming or handler.request_deserializer is None:
        return handler  # no method of ours streams its requests

    async def refuse_malformed(request: object, context: Any) -> None:
        if isinstance(request, Malformed):
            await _refuse(method, request, context)

    wrapped = checked(handler, refuse_malformed)
    assert wrapped is not None  # a handler with a unary request is always wrapped
    return wrapped._replace(request_deserializer=_lenient(handler.request_deserializer))


class MalformedRequests(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answers undecodable requests to any method with INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self._guarded: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Handler]],
        handler_call_details: Any,
    ) -> Handler:
        """The method's handler, guarded (built once per method)."""
        method = handler_call_details.method
        guarded = self._guarded.get(method)
        if guarded is None:
            handler = await continuation(handler_call_details)
            guarded = guard(method, handler)
            if handler is not None:  # an unknown method stays UNIMPLEMENTED, uncached
                self._guarded[method] = guarded
        return guarded
