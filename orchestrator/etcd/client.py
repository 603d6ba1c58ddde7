"""A synchronous etcd v3 client: keys, transactions, leases, watches, cluster status."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from edgefleet.etcd import rpc_pb2, rpc_pb2_grpc
from orchestrator.etcd.channels import Channels, failure_detail, unreachable
from orchestrator.etcd.errors import EtcdError, EtcdUnavailable
from orchestrator.etcd.target import EtcdTarget
from orchestrator.etcd.txn import Compare, KeyValue, Op, TxnResult, prefix_end
from orchestrator.etcd.watch import WatchBatch, WatchStream

__all__ = ["EtcdClient", "EtcdStatus", "WatchBatch", "WatchStream"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EtcdStatus:
    """What the reachable members say: the leader's member id (0: none), the newest
    revision, how many configured endpoints answered, and the cluster's member count."""

    leader: int
    revision: int
    reachable: int
    members: int
    unreachable: tuple[str, ...]


class EtcdClient:
    """etcd's KV, Lease, Watch and Maintenance APIs over gRPC, safe to share between threads.

    Every call goes to the member that last answered and moves on to the next one when a
    member is unreachable, times out (`timeout` seconds per member) or has no leader;
    EtcdUnavailable when none could serve it. A write that timed out may still have been
    applied: guard writes with `Compare`s so that a retry cannot apply them twice.
    """

    def __init__(self, target: EtcdTarget, *, timeout: float = 2.0) -> None:
        if not target.endpoints:
            raise ValueError("an etcd client needs at least one endpoint")
        self.target = target
        self.timeout = timeout
        self._channels = Channels(target)

    def close(self) -> None:
        """Close the connections; calls after this raise EtcdUnavailable."""
        self._channels.close()

    def get(self, key: bytes) -> KeyValue | None:
        """The key, or None when absent (a linearizable read: needs the quorum)."""
        request = rpc_pb2.RangeRequest(key=key)
        response = self._call("read", lambda ch: _kv(ch).Range(request, timeout=self.timeout))
        return KeyValue.from_pb(response.kvs[0]) if response.kvs else None

    def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """Every key under `prefix`, sorted by key, and the revision they were read at."""
        request = rpc_pb2.RangeRequest(
            key=prefix,
            range_end=prefix_end(prefix),
            sort_order=rpc_pb2.RangeRequest.ASCEND,
            sort_target=rpc_pb2.RangeRequest.KEY,
        )
        response = self._call("read", lambda ch: _kv(ch).Range(request, timeout=self.timeout))
        return [KeyValue.from_pb(kv) for kv in response.kvs], response.header.revision

    def changed_since(self, prefix: bytes, revision: int) -> tuple[list[bytes], int, int]:
        """Keys under `prefix` written after `revision`, how many keys it holds now, and the
        revision read at. No key written and the same count: nothing changed in between."""
        request = rpc_pb2.RangeRequest(
            key=prefix, range_end=prefix_end(prefix), keys_only=True, min_mod_revision=revision + 1
        )
        response = self._call("read", lambda ch: _kv(ch).Range(request, timeout=self.timeout))
        return [kv.key for kv in response.kvs], response.count, response.header.revision

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Write one key; returns the revision of the write."""
        request = rpc_pb2.PutRequest(key=key, value=value, lease=lease)
        response = self._call("write", lambda ch: _kv(ch).Put(request, timeout=self.timeout))
        revision: int = response.header.revision
        return revision

    def txn(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Run `success` if every compare holds, else `failure`, atomically."""
        request = rpc_pb2.TxnRequest(
            compare=[c.to_pb() for c in compare],
            success=[op.to_pb() for op in success],
            failure=[op.to_pb() for op in failure],
        )
        response = self._call("transaction", lambda ch: _kv(ch).Txn(request, timeout=self.timeout))
        return TxnResult.from_pb(response)

    def compact(self, revision: int) -> None:
        """Drop the history before `revision` (watches from older revisions get EtcdCompacted)."""
        request = rpc_pb2.CompactionRequest(revision=revision, physical=True)
        self._call("compaction", lambda ch: _kv(ch).Compact(request, timeout=self.timeout))

    def lease_grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; returns its id."""
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl)
        response = self._call(
            "lease grant", lambda ch: _lease(ch).LeaseGrant(request, timeout=self.timeout)
        )
        if response.error:
            raise EtcdError(f"etcd did not grant a lease: {response.error}")
        lease_id: int = response.ID
        return lease_id

    def lease_keepalive(self, lease_id: int) -> int:
        """Renew a lease once; returns its TTL in seconds now, 0 when the lease is gone."""
        request = rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)

        def renew(channel: grpc.Channel) -> int:
            responses = _lease(channel).LeaseKeepAlive(iter([request]), timeout=self.timeout)
            try:
                ttl: int = next(responses).TTL
            finally:
                responses.cancel()
            return ttl

        return self._call("lease keepalive", renew)

    def lease_revoke(self, lease_id: int) -> None:
        """End a lease now, deleting its keys (nothing happens when it is already gone)."""
        request = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        try:
            self._call(
                "lease revoke", lambda ch: _lease(ch).LeaseRevoke(request, timeout=self.timeout)
            )
        except EtcdError as error:
            if "lease not found" not in str(error):
                raise

    def watch_prefix(
        self, prefix: bytes, start_revision: int, stop: threading.Event
    ) -> WatchStream:
        """Events under `prefix` from `start_revision` on, as batches, until `stop` is set.

        The stream raises EtcdUnavailable when it breaks and EtcdCompacted when
        `start_revision` is older than etcd's history.
        """
        failures: list[str] = []
        for endpoint in self._channels.order():
            channel = self._channels.channel(endpoint)
            stream = WatchStream(channel, endpoint, prefix, start_revision, stop, self.timeout)
            try:
                stream.wait_created()
            except EtcdUnavailable as error:
                stream.close()
                failures.append(str(error))
                continue
            except BaseException:
                stream.close()
                raise
            self._channels.prefer(endpoint)
            return stream
        raise self._unavailable("watch", failures)

    def status(self) -> EtcdStatus:
        """Ask every endpoint for its status (EtcdUnavailable when none answers)."""
        leader = revision = reachable = 0
        missing: list[str] = []
        failures: list[str] = []
        for endpoint in self.target.endpoints:
            stub = rpc_pb2_grpc.MaintenanceStub(self._channels.channel(endpoint))
            try:
                answer = stub.Status(rpc_pb2.StatusRequest(), timeout=self.timeout)
            except grpc.RpcError as error:
                missing.append(endpoint)
                failures.append(f"{endpoint}: {failure_detail(error)}")
                continue
            reachable += 1
            leader = leader or answer.leader
            revision = max(revision, answer.header.revision)
        if not reachable:
            raise self._unavailable("status", failures)
        members = self._call(
            "member list",
            lambda ch: rpc_pb2_grpc.ClusterStub(ch).MemberList(
                rpc_pb2.MemberListRequest(), timeout=self.timeout
            ),
        )
        return EtcdStatus(leader, revision, reachable, len(members.members), tuple(missing))

    def _call(self, what: str, attempt: Callable[[grpc.Channel], T]) -> T:
        failures: list[str] = []
        for endpoint in self._channels.order():
            try:
                result = attempt(self._channels.channel(endpoint))
            except grpc.RpcError as error:
                if unreachable(error):
                    failures.append(f"{endpoint}: {failure_detail(error)}")
                    continue
                raise EtcdError(
                    f"etcd member {endpoint} refused the {what}: {failure_detail(error)}"
                ) from None
            self._channels.prefer(endpoint)
            return result
        raise self._unavailable(what, failures)

    def _unavailable(self, what: str, failures: list[str]) -> EtcdUnavailable:
        return EtcdUnavailable(
            f"the etcd cluster at {self.target.describe()} does not answer (quorum lost?): "
            f"the {what} failed on every member: {'; '.join(failures)}"
        )


def _kv(channel: grpc.Channel) -> rpc_pb2_grpc.KVStub:
    return rpc_pb2_grpc.KVStub(channel)


def _lease(channel: grpc.Channel) -> rpc_pb2_grpc.LeaseStub:
    return rpc_pb2_grpc.LeaseStub(channel)
