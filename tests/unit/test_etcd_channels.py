"""Which failed etcd calls are tried on another member: the member could not serve it now."""

from __future__ import annotations

import grpc
import pytest

from orchestrator.etcd.channels import unreachable


class Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        # A member without quorum lets its own deadline through as UNKNOWN (etcd 3.4).
        (grpc.StatusCode.UNKNOWN, "context deadline exceeded"),
        (grpc.StatusCode.UNKNOWN, "etcdserver: request timed out"),
    ],
)
def test_a_member_that_cannot_serve_now_is_skipped(code: grpc.StatusCode, details: str) -> None:
    assert unreachable(Failed(code, details))


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"),
        (grpc.StatusCode.UNKNOWN, "something else went wrong"),
    ],
)
def test_a_refusal_is_final(code: grpc.StatusCode, details: str) -> None:
    assert not unreachable(Failed(code, details))
