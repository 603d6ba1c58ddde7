"""Reaching the controller: where to look, one connect check, gRPC errors mapped once.

Every command that talks to a controller goes through `Controller`; no other
module sees a `grpc.RpcError`. Refusals (INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, PERMISSION_DENIED, ...) become `ControllerRefused` (exit 1);
a controller that cannot be reached or stops answering becomes
`ControllerUnavailable` (exit 3).

Without a config edgectl speaks plaintext to one address (a controller's API on
loopback). With `--config FILE` (or `$EDGEFLEET_CONFIG`) it speaks TLS with the
file's admin certificate, checks that the controller's certificate comes from the
cluster CA and names `controller.edgefleet.invalid` (every controller's API
certificate does, whatever address it is dialled at), and tries the file's
controllers in order: one that is UNAVAILABLE passes the call to the next; a
refusal is final.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from edgefleet.v1 import controller_pb2_grpc
from edgefleet_common.grpc_errors import ANSWERED_KEY
from edgefleet_common.grpc_transport import GrpcOptions, client_options
from edgefleet_common.pki import CONTROLLER_SERVER_NAME
from edgefleet_common.ports import is_loopback
from orchestrator.cli.client_config import (
    CONFIG_ENV,
    ClientConfig,
    load_client_config,
    valid_address,
)
from orchestrator.config import CONTROLLER_ENV, DEFAULT_CONTROLLER_ADDRESS
from orchestrator.errors import ControllerUnavailable, EdgeFleetError, UsageError
from orchestrator.manifest import ManifestError

CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 30.0

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

    def unreachable(self, problem: str = "") -> str:
        """The one-line message for a controller that does not answer at this address;
        `problem`: what the connection attempt said."""
        message = (
            f"cannot reach the controller at {self.target} ({self.origin}; set --controller "
            f"or {CONTROLLER_ENV}, or start one with `edgectl controller`)"
        )
        # A server that closes a plaintext connection at once speaks TLS.
        if not is_loopback(self.target) or "socket closed" in problem.lower():
            message += (
                "; a controller API off loopback takes TLS with an admin certificate: "
                "`edgectl --config FILE` (on a controller box, `edgectl --config "
                "DATA_DIR/admin.conf admin create NAME` writes one)"
            )
        return message


@dataclass(frozen=True, slots=True)
class Transport:
    """How edgectl dials a controller: plaintext, or TLS with an admin certificate."""

    credentials: Any = None
    """grpc.ChannelCredentials; None: plaintext."""
    source: str = ""
    """The config file the credentials come from."""

    @classmethod
    def of(cls, config: ClientConfig) -> Transport:
        """TLS with the config's admin certificate, trusting only the cluster CA."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=config.ca_pem,
            private_key=config.key_pem,
            certificate_chain=config.cert_pem,
        )
        return cls(credentials, config.source)

    def channel(self, target: str, connect_timeout: float) -> Any:
        """A channel to `target` (not connected yet)."""
        options = _channel_options(connect_timeout)
        if self.credentials is None:
            return grpc.insecure_channel(target, options=options)
        options.append(("grpc.ssl_target_name_override", CONTROLLER_SERVER_NAME))
        return grpc.secure_channel(target, self.credentials, options=options)


PLAINTEXT = Transport()


def add_controller_option(parser: argparse.ArgumentParser) -> None:
    """`--controller HOST:PORT` and `--config FILE`, accepted before or after the command."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        default=argparse.SUPPRESS,
        help=(
            f"edgectl config with the controllers and an admin certificate (default: "
            f"${CONFIG_ENV}); made by `edgectl admin create NAME`"
        ),
    )
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
    if not valid_address(address.target):
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
    """A connected client of the controller API (with the other controllers to try)."""

    def __init__(
        self,
        address: ControllerAddress,
        channel: Any,
        *,
        others: Sequence[ControllerAddress] = (),
        transport: Transport = PLAINTEXT,
    ) -> None:
        self.address = address
        self._channel = channel
        self._stub: Any = controller_pb2_grpc.ControllerServiceStub(channel)
        self._others = list(others)
        self._transport = transport

    @classmethod
    def connect(
        cls,
        address: ControllerAddress,
        timeout: float | None = None,
        *,
        transport: Transport = PLAINTEXT,
    ) -> Controller:
        """Open a channel and check it connects; raises ControllerUnavailable if not."""
        return cls.connect_any([address], timeout, transport=transport)

    @classmethod
    def connect_any(
        cls,
        addresses: Sequence[ControllerAddress],
        timeout: float | None = None,
        *,
        transport: Transport = PLAINTEXT,
    ) -> Controller:
        """The first of `addresses`, in order, that answers (ControllerUnavailable if none)."""
        timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
        failures: list[tuple[ControllerAddress, str]] = []
        for address in addresses:
            channel = transport.channel(address.target, timeout)
            problem = _connect_problem(channel, timeout)
            if problem is None:
                others = [a for a in addresses if a != address]
                return cls(address, channel, others=others, transport=transport)
            channel.close()
            failures.append((address, problem))
        raise ControllerUnavailable(_unreachable(failures, transport))

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
            answer = self._fail_over(exc, method, request)
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

    def _fail_over(self, exc: grpc.RpcError, method: str, request: Message) -> Any:
        """After UNAVAILABLE, the answer of the next controller that gives one; raises the
        mapped error for a refusal, or once no other controller answers."""
        while _code(exc) == grpc.StatusCode.UNAVAILABLE and self._others:
            address = self._others.pop(0)
            channel = self._transport.channel(address.target, CONNECT_TIMEOUT_S)
            if _connect_problem(channel, CONNECT_TIMEOUT_S) is not None:
                channel.close()
                continue
            self._channel.close()
            self.address, self._channel = address, channel
            self._stub = controller_pb2_grpc.ControllerServiceStub(channel)
            try:
                return getattr(self._stub, method)(request, timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as again:
                exc = again
        raise self._mapped(exc, method) from None

    def _mapped(self, exc: grpc.RpcError, method: str) -> EdgeFleetError:
        code = _code(exc)
        details = str(exc.details() or "") if callable(getattr(exc, "details", None)) else ""
        if code == grpc.StatusCode.UNAVAILABLE and _answered(exc):
            # The controller is there but cannot do it now (its store is read-only).
            return ControllerRefused(details or "unavailable", code.name)
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
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
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


def _answered(exc: grpc.RpcError) -> bool:
    """Whether a status came from the controller's own handler, not a broken connection."""
    trailers = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else ()
    return any(key == ANSWERED_KEY for key, _ in trailers or ())


def _code(exc: grpc.RpcError) -> Any:
    """The status code of a failed call (None when it carries none)."""
    return exc.code() if callable(getattr(exc, "code", None)) else None


def _connect_problem(channel: Any, timeout: float) -> str | None:
    """Why nothing speaking gRPC answers on the channel within `timeout` seconds; None when
    something does.

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
        if _code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"no answer within {timeout:g}s"
        if _code(exc) == grpc.StatusCode.UNAVAILABLE:
            return str(exc.details() or "unavailable")
    return None


def _unreachable(failures: Sequence[tuple[ControllerAddress, str]], transport: Transport) -> str:
    """The message for controllers that all failed to answer."""
    if transport.credentials is None and len(failures) == 1:
        return failures[0][0].unreachable(failures[0][1])
    tried = "; ".join(f"{address.target}: {problem}" for address, problem in failures)
    return (
        f"cannot reach any controller of {transport.source or 'the config'} ({tried}); "
        "check that a controller runs there and that the config is for this cluster "
        "(on a controller box, `edgectl --config DATA_DIR/admin.conf admin create NAME` "
        "makes a new one)"
    )


def resolve_config(flag: Path | None, environ: Mapping[str, str]) -> ClientConfig | None:
    """The config named by `--config`, else by the environment; None: neither names one."""
    if flag is not None:
        return load_client_config(flag)
    named = environ.get(CONFIG_ENV, "").strip()
    return load_client_config(Path(named)) if named else None


def connect(args: argparse.Namespace) -> Controller:
    """The controller named by the command line (or the environment, or the default): with
    a config, the first of its controllers that answers (`--controller` picks one)."""
    config = resolve_config(getattr(args, "config", None), os.environ)
    flag = getattr(args, "controller", None)
    if config is None:
        return Controller.connect(resolve_address(flag, os.environ))
    if flag:
        addresses = [resolve_address(flag, {})]
    else:
        addresses = [ControllerAddress(a, f"from {config.source}") for a in config.controllers]
    return Controller.connect_any(addresses, transport=Transport.of(config))
