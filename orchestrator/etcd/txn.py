"""etcd's transaction vocabulary: key-value records, compares, operations, results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgefleet.etcd import kv_pb2, rpc_pb2

CompareOp = Literal["=", "<", ">", "!="]

_RESULTS = {
    "=": rpc_pb2.Compare.EQUAL,
    "<": rpc_pb2.Compare.LESS,
    ">": rpc_pb2.Compare.GREATER,
    "!=": rpc_pb2.Compare.NOT_EQUAL,
}


def prefix_end(prefix: bytes) -> bytes:
    """The range end that makes a range read or delete cover every key under `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # etcd's "to the end of the keyspace"
    return stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it, with the revisions that fence writes against it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_pb(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(
            key=kv.key,
            value=kv.value,
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease=kv.lease,
        )


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction; build it with the static constructors."""

    key: bytes
    target: Literal["mod", "create", "value"]
    op: CompareOp
    against_revision: int = 0
    against_value: bytes = b""

    @staticmethod
    def mod_revision(key: bytes, op: CompareOp, revision: int) -> Compare:
        """The key's last modification revision (0 when absent) compared with `revision`."""
        return Compare(key, "mod", op, against_revision=revision)

    @staticmethod
    def create_revision(key: bytes, op: CompareOp, revision: int) -> Compare:
        """The key's creation revision compared with `revision`; `= 0` means absent."""
        return Compare(key, "create", op, against_revision=revision)

    @staticmethod
    def value(key: bytes, op: CompareOp, value: bytes) -> Compare:
        """The key's value compared (bytewise) with `value`."""
        return Compare(key, "value", op, against_value=value)

    def to_pb(self) -> rpc_pb2.Compare:
        result = _RESULTS[self.op]
        if self.target == "mod":
            return rpc_pb2.Compare(
                key=self.key,
                result=result,
                target=rpc_pb2.Compare.MOD,
                mod_revision=self.against_revision,
            )
        if self.target == "create":
            return rpc_pb2.Compare(
                key=self.key,
                result=result,
                target=rpc_pb2.Compare.CREATE,
                create_revision=self.against_revision,
            )
        return rpc_pb2.Compare(
            key=self.key, result=result, target=rpc_pb2.Compare.VALUE, value=self.against_value
        )


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a transaction branch; build it with the static constructors."""

    kind: Literal["put", "delete", "delete_prefix", "get"]
    key: bytes
    value: bytes = b""
    lease: int = 0

    @staticmethod
    def put(key: bytes, value: bytes, lease: int = 0) -> Op:
        """Write `value` (attached to `lease` when not 0: deleted when the lease ends)."""
        return Op("put", key, value=value, lease=lease)

    @staticmethod
    def delete(key: bytes) -> Op:
        """Delete one key (nothing happens when it is absent)."""
        return Op("delete", key)

    @staticmethod
    def delete_prefix(prefix: bytes) -> Op:
        """Delete every key under `prefix`."""
        return Op("delete_prefix", prefix)

    @staticmethod
    def get(key: bytes) -> Op:
        """Read one key; its result is in `TxnResult.gets`."""
        return Op("get", key)

    def to_pb(self) -> rpc_pb2.RequestOp:
        if self.kind == "put":
            put = rpc_pb2.PutRequest(key=self.key, value=self.value, lease=self.lease)
            return rpc_pb2.RequestOp(request_put=put)
        if self.kind == "get":
            return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=self.key))
        end = prefix_end(self.key) if self.kind == "delete_prefix" else b""
        delete = rpc_pb2.DeleteRangeRequest(key=self.key, range_end=end)
        return rpc_pb2.RequestOp(request_delete_range=delete)


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Whether the compares held, the revision after it, and each get's keys in order."""

    succeeded: bool
    revision: int
    gets: list[list[KeyValue]]

    @classmethod
    def from_pb(cls, response: rpc_pb2.TxnResponse) -> TxnResult:
        gets = [
            [KeyValue.from_pb(kv) for kv in op.response_range.kvs]
            for op in response.responses
            if op.WhichOneof("response") == "response_range"
        ]
        return cls(succeeded=response.succeeded, revision=response.header.revision, gets=gets)
