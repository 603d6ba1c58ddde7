"""Calling the controller API's handlers in process, for the dashboard's HTTP API.

The dashboard answers with the same messages `edgectl` gets, so it calls the same
`ControllerService` methods, with a small stand-in for the gRPC call context. A call
the API refuses raises `RpcRefused` with its status code; `http_status` and
`error_body` turn that into the dashboard's HTTP answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from edgefleet_common.grpc_errors import StatusError

CALL_TIMEOUT_S = 30.0
"""The deadline an in-process call reports (`time_remaining`), as edgectl's default."""

Resp = TypeVar("Resp", bound=Message)

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""HTTP status for each gRPC status code (anything else: 500)."""


class RpcRefused(StatusError):
    """The API answered a call with an error status (`code`) and message."""


class CallContext:
    """What the controller API's handlers use of a gRPC call context."""

    def __init__(self, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s
        self.trailers: tuple[tuple[str, str], ...] = ()

    def time_remaining(self) -> float:
        """Seconds the call may take."""
        return self._timeout_s

    def set_trailing_metadata(self, trailers: tuple[tuple[str, str], ...]) -> None:
        """Kept, unused: the HTTP answer carries the status itself."""
        self.trailers = trailers

    def peer(self) -> str:
        """Where the call came from: this process."""
        return "in-process:dashboard"

    def auth_context(self) -> dict[str, list[bytes]]:
        """No client certificate: the dashboard checks its callers itself."""
        return {}

    async def abort(self, code: grpc.StatusCode, message: str) -> NoReturn:
        """End the call with `code`: raises `RpcRefused`."""
        raise RpcRefused(code, message)


async def call(method: Callable[[Any, CallContext], Awaitable[Resp]], request: Message) -> Resp:
    """Run one unary API handler (e.g. `service.ListNodes`); `RpcRefused` on an error."""
    return await method(request, CallContext())


def stream(
    method: Callable[[Any, CallContext], AsyncIterator[Resp]], request: Message
) -> AsyncIterator[Resp]:
    """Run one streaming API handler (e.g. `service.WatchEvents`); the iterator raises
    `RpcRefused` on an error."""
    return method(request, CallContext())


def as_json(message: Message) -> dict[str, Any]:
    """A message as `edgectl -o json` prints it."""
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status that stands for a gRPC status code."""
    return HTTP_STATUS.get(code, 500)


def error_body(message: str, kind: str) -> dict[str, Any]:
    """The dashboard's error shape: `{"error": {"message", "type"}}`."""
    return {"error": {"message": message, "type": kind}}


def refusal_body(refused: StatusError) -> dict[str, Any]:
    """The error body for a refused call: its message, its code's name in lower case."""
    return error_body(str(refused), refused.code.name.lower())
