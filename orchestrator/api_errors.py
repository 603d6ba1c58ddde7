"""How the controller API answers errors, in one place: a refusal (`StatusError`) with its
own code, a store that cannot take the request (`StoreError`, e.g. an etcd cluster that
lost its quorum) with UNAVAILABLE and the store's message, anything else INTERNAL."""

from __future__ import annotations

import logging

import grpc

from edgefleet_common.grpc_errors import ErrorMapping, StatusError
from orchestrator.store import StoreError

log = logging.getLogger("orchestrator.api")


class ApiError(StatusError):
    """A request the controller refuses; carries the status code to answer with."""


def classify(error: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The status code and message for a handler's error (None: unforeseen)."""
    if isinstance(error, StatusError):  # ApiError, and the router's RouteError
        return error.code, str(error)
    if isinstance(error, StoreError):  # edgectl tries the next controller on UNAVAILABLE
        return grpc.StatusCode.UNAVAILABLE, str(error)
    return None


errors = ErrorMapping(classify, "in the controller", log)
unary = errors.unary
streaming = errors.streaming
