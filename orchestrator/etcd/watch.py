"""A watch on a key prefix: etcd's bidirectional Watch stream read as batches of events."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

import grpc

from edgefleet.etcd import kv_pb2, rpc_pb2, rpc_pb2_grpc
from orchestrator.etcd.channels import failure_detail, unreachable
from orchestrator.etcd.errors import EtcdCompacted, EtcdError, EtcdUnavailable
from orchestrator.etcd.txn import KeyValue, prefix_end

EventKind = Literal["put", "delete"]

# Ask etcd to end the stream when the member loses its leader (etcd's "require leader"),
# so a watch on a member cut from the quorum breaks instead of going quiet.
REQUIRE_LEADER = (("hasleader", "true"),)
POLL = 0.1
"""How often the request side looks for stop and the open deadline."""


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events in revision order; every event up to `revision` has been delivered."""

    revision: int
    events: list[tuple[EventKind, KeyValue]]


class WatchStream(Iterator[WatchBatch]):
    """Batches from one Watch call until `stop` is set (then iteration just ends).

    Raises EtcdUnavailable when the stream breaks and EtcdCompacted when the start
    revision is no longer in etcd's history. `close()` ends it early. Progress
    requests are not used: etcd before 3.4.24 and 3.5.8 can report progress past
    events it has not sent yet.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        endpoint: str,
        prefix: bytes,
        start_revision: int,
        stop: threading.Event,
        open_timeout: float,
    ) -> None:
        self.endpoint = endpoint
        self._stop = stop
        self._open_timeout = open_timeout
        self._open_deadline = time.monotonic() + open_timeout
        self._done = threading.Event()
        self._created = threading.Event()
        self._call_ready = threading.Event()
        self._timed_out = False
        self.created_revision = 0
        """etcd's revision when the watch started: the events up to it are history."""
        create = rpc_pb2.WatchCreateRequest(
            key=prefix, range_end=prefix_end(prefix), start_revision=start_revision
        )
        stub = rpc_pb2_grpc.WatchStub(channel)
        self._call = stub.Watch(
            self._requests(rpc_pb2.WatchRequest(create_request=create)), metadata=REQUIRE_LEADER
        )
        self._call_ready.set()

    def wait_created(self) -> None:
        """Block until etcd confirms the watch (EtcdUnavailable if it does not in time)."""
        try:
            response = self._next_response()
        except StopIteration:
            return
        if not response.created or response.canceled:
            reason = response.cancel_reason or "no reason given"
            raise EtcdError(f"etcd member {self.endpoint} refused the watch: {reason}")
        self.created_revision = response.header.revision
        self._created.set()

    def close(self) -> None:
        """End the stream (idempotent)."""
        self._done.set()
        self._call.cancel()

    def __iter__(self) -> WatchStream:
        return self

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __next__(self) -> WatchBatch:
        while True:
            response = self._next_response()
            if response.compact_revision:
                raise EtcdCompacted(
                    f"etcd has compacted its history up to revision "
                    f"{response.compact_revision}: read the keys again",
                    response.compact_revision,
                )
            if response.canceled:
                reason = response.cancel_reason or "no reason given"
                raise EtcdUnavailable(f"etcd member {self.endpoint} cancelled the watch: {reason}")
            if response.events:
                events = [_event(e) for e in response.events]
                return WatchBatch(max(kv.mod_revision for _, kv in events), events)

    def _next_response(self) -> rpc_pb2.WatchResponse:
        try:
            response: rpc_pb2.WatchResponse = next(self._call)
        except StopIteration:
            if self._stop.is_set() or self._done.is_set():
                raise
            raise EtcdUnavailable(f"etcd member {self.endpoint} ended the watch stream") from None
        except grpc.RpcError as error:
            if self._stop.is_set() or self._done.is_set():
                raise StopIteration from None
            if self._timed_out:
                raise EtcdUnavailable(
                    f"etcd member {self.endpoint} did not start a watch within "
                    f"{self._open_timeout:g} s"
                ) from None
            detail = failure_detail(error)
            if unreachable(error):
                raise EtcdUnavailable(
                    f"the watch on etcd member {self.endpoint} broke: {detail}"
                ) from None
            raise EtcdError(f"etcd member {self.endpoint} refused the watch: {detail}") from None
        return response

    def _requests(self, create: rpc_pb2.WatchRequest) -> Iterator[rpc_pb2.WatchRequest]:
        yield create
        self._call_ready.wait()
        while not (self._stop.is_set() or self._done.is_set()):
            if not self._created.is_set() and time.monotonic() > self._open_deadline:
                self._timed_out = True
                break
            self._stop.wait(POLL)
        self._call.cancel()


def _event(event: kv_pb2.Event) -> tuple[EventKind, KeyValue]:
    kind: EventKind = "delete" if event.type == kv_pb2.Event.DELETE else "put"
    return kind, KeyValue.from_pb(event.kv)
