"""What a routing failure means: retried elsewhere, counted against a circuit, or given up.

A failure that left nothing undone says why the edge could not serve
(`RouteError.exhausted`), so the gateway can escalate it.
"""

from __future__ import annotations

from typing import Literal

import grpc

from edgefleet_common.grpc_errors import StatusError

RETRIABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,  # stale generation: the replica moved
        grpc.StatusCode.NOT_FOUND,  # the node no longer hosts it
        grpc.StatusCode.CANCELLED,  # the connection to the node broke
    }
)
"""Errors after which another replica may be tried (when nothing reached the caller)."""

CONNECTION_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    }
)
"""Errors that count against a replica's circuit (not refusals the node sent)."""

MOVED = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION})
"""Refusals that say the replica is not there any more (moved away, or fenced by a newer
generation): the router tells its directory."""

Exhausted = Literal[
    "no-ready-replica", "circuits-open", "queues-full", "replicas-failed", "retry-budget-spent"
]
"""Why no edge replica could serve a request that nothing has started to answer."""


class RouteError(StatusError):
    """No replica could serve the request; `code` is the gRPC status to answer with.

    `exhausted` is set only when the edge could not serve and nothing ran: the
    request may go elsewhere. It stays None for a bad request, a deadline spent,
    or an outcome that is unknown (an answer or a tool had started).
    """

    def __init__(
        self, code: grpc.StatusCode, message: str, exhausted: Exhausted | None = None
    ) -> None:
        super().__init__(code, message)
        self.exhausted = exhausted


def stub_status(error: grpc.aio.AioRpcError | StatusError) -> tuple[grpc.StatusCode, str]:
    """(code, message) of a failed call to a node: a gRPC error from a node's API, or a
    `StatusError` from an in-process stub (the gateway's own node)."""
    if isinstance(error, StatusError):
        return error.code, str(error)
    code: grpc.StatusCode = error.code()
    return code, error.details() or code.name
