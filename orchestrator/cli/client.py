"""Reaching the controller: where to look, one connect check, gRPC errors mapped once.

Every command that talks to a controller goes through `Controller`; no other
module sees a `grpc.RpcError`. Refusals (INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, ...) become `ControllerRefused` (exit 1); a controller that
cannot be reached or stops answering becomes `ControllerUnavailable` (exit 3).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from edgefleet.v1 import controller_pb2_grpc
from edgefleet_common.grpc_transport import GrpcOptions, client_options
from orchestrator.config import CONTROLLER_ENV, DEFAULT_CONTROLLER_ADDRESS
from orchestrator.errors import ControllerUnavailable, EdgeFleetError, UsageError
from orchestrator.manifest import ManifestError

CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 30.0

_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
# A line of rendered manifest diagnostics: `FILE:LINE:COL: error: ...`.
_DIAGNOSTIC_LINE = re.compile(r"^.+:\d+:\d+: (error|warning): ", re.M)

Reply = TypeVar("Reply", bound=Message)


class ControllerRefused(EdgeFleetError):
    """The controller answered but refused the request; `code` is the gRPC status name."""

    exit_code = 1

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ControllerAddress:
    """Where edgectl looks for the controller, and what told it to look there."""

    target: str
    origin: str

    def unreachable(self) -> str:
        """The one-line message for a controller that does not answer at this address."""
        return (
            f"cannot reach the controller at {self.target} ({self.origin}; set --controller "
            f"or {CONTROLLER_ENV}, or start one with `edgectl controller`)"
        )


def add_controller_option(parser: argparse.ArgumentParser) -> None:
    """`--controller HOST:PORT`, accepted before or after the command name."""
    parser.add_argument(
        "--controller",
        metavar="HOST:PORT",
        # SUPPRESS: a subcommand that was not given the option keeps the global value.
        default=argparse.SUPPRESS,
        help=(
            f"controller API address (default: ${CONTROLLER_ENV}, "
            f"else {DEFAULT_CONTROLLER_ADDRESS})"
        ),
    )


def resolve_address(flag: str | None, environ: Mapping[str, str]) -> ControllerAddress:
    """The flag, else the environment, else the default; a malformed value is a usage error."""
    if flag:
        address = ControllerAddress(flag.strip(), "from --controller")
    elif environ.get(CONTROLLER_ENV, "").strip():
        address = ControllerAddress(environ[CONTROLLER_ENV].strip(), f"from {CONTROLLER_ENV}")
    else:
        address = ControllerAddress(DEFAULT_CONTROLLER_ADDRESS, "from the default")
    match = _HOST_PORT.match(address.target)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise UsageError(
            f"controller address `{address.target}` ({address.origin}) is not HOST:PORT, "
            f"e.g. {DEFAULT_CONTROLLER_ADDRESS}"
        )
    return address


def error_text(exc: EdgeFleetError) -> str:
    """How an error is shown: located diagnostics as they are, anything else after `error: `."""
    message = str(exc)
    if isinstance(exc, ManifestError) or (
        isinstance(exc, ControllerRefused) and _DIAGNOSTIC_LINE.search(message)
    ):
        return message
    return f"error: {message}"


class Controller:
    """A connected client of the controller API."""

    def __init__(self, address: ControllerAddress, channel: Any) -> None:
        self.address = address
        self._channel = channel
        self._stub: Any = controller_pb2_grpc.ControllerServiceStub(channel)

    @classmethod
    def connect(cls, address: ControllerAddress, timeout: float | None = None) -> Controller:
        """Open a channel and check it connects; raises ControllerUnavailable if not."""
        timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
        channel = grpc.insecure_channel(address.target, options=_channel_options(timeout))
        if not _wait_connected(channel, timeout):
            channel.close()
            raise ControllerUnavailable(address.unreachable())
        return cls(address, channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (cancels any stream still open)."""
        self._channel.close()

    def call(self, method: str, request: Message, reply: type[Reply]) -> Reply:
        """One unary call, e.g. `call("ListNodes", ListNodesRequest(), ListNodesResponse)`."""
        try:
            answer = getattr(self._stub, method)(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise self._mapped(exc, method) from None
        if not isinstance(answer, reply):
            raise TypeError(f"{method} answered {type(answer).__name__}, not {reply.__name__}")
        return answer

    def stream(
        self, method: str, request: Message, reply: type[Reply], timeout: float | None = None
    ) -> Iterator[Reply]:
        """A server stream; `timeout` None for streams that follow until cancelled."""
        responses = getattr(self._stub, method)(request, timeout=timeout)
        try:
            for answer in responses:
                if not isinstance(answer, reply):
                    raise TypeError(f"{method} streamed {type(answer).__name__}")
                yield answer
        except grpc.RpcError as exc:
            raise self._mapped(exc, method) from None
        finally:
            # Leaving early (a break, Ctrl-C) must not leave the call running.
            responses.cancel()

    def _mapped(self, exc: grpc.RpcError, method: str) -> EdgeFleetError:
        code: Any = exc.code() if callable(getattr(exc, "code", None)) else None
        details = str(exc.details() or "") if callable(getattr(exc, "details", None)) else ""
        if code == grpc.StatusCode.UNAVAILABLE:
            return ControllerUnavailable(
                f"lost the controller at {self.address.target} during {method}"
                + (f": {details}" if details else "")
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ControllerUnavailable(
                f"the controller at {self.address.target} did not answer {method} "
                f"within {CALL_TIMEOUT_S:g}s"
            )
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return ControllerRefused(
                f"the controller at {self.address.target} does not support {method} "
                "(is it older than this edgectl?)",
                code.name,
            )
        name = code.name if code is not None else "UNKNOWN"
        if code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.ALREADY_EXISTS,
        ):
            return ControllerRefused(details or name.lower().replace("_", " "), name)
        return ControllerRefused(f"{method} failed ({name}): {details or 'no details'}", name)


def _channel_options(connect_timeout: float) -> GrpcOptions:
    """The shared client options, with the whole connect deadline for a first connection.

    gRPC cuts a connection attempt at the minimum reconnect backoff, which the
    shared options keep short for node links that must recover fast; a
    controller across a slow link needs the full deadline to answer at all.
    """
    options = [o for o in client_options() if o[0] != "grpc.min_reconnect_backoff_ms"]
    return [*options, ("grpc.min_reconnect_backoff_ms", int(connect_timeout * 1000))]


def _wait_connected(channel: Any, timeout: float) -> bool:
    """Whether anything speaking gRPC answers on the channel within `timeout` seconds.

    The probe is the standard health check; a controller without that service
    answers UNIMPLEMENTED, which proves it is there just as well. Not waiting
    for readiness makes a refused connection fail at once; the deadline covers
    a host that drops packets.
    """
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    try:
        check(health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=False)
    except grpc.RpcError as exc:
        return exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return True


def connect(args: argparse.Namespace) -> Controller:
    """The controller named by the command line (or the environment, or the default)."""
    return Controller.connect(resolve_address(getattr(args, "controller", None), os.environ))
