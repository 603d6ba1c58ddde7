"""Writing the controller's state to etcd: decide on the mirror, commit if nothing moved.

A write reads what it needs from the `PrefixMirror`, decides, and commits one
transaction that holds only if every key it read still has the revision it saw
(and, for a fenced leader-only write, if the leader key is still the one this
controller made: the fence is its create revision). When another writer got
there first, the mirror is brought up to the revision etcd answered with and the
write decides again. A committed write returns once the mirror has seen it, so
the writer reads its own writes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from orchestrator.etcd.client import EtcdClient
from orchestrator.etcd.errors import EtcdError, EtcdUnavailable
from orchestrator.etcd.mirror import PrefixMirror
from orchestrator.etcd.txn import Compare, KeyValue, Op, TxnResult
from orchestrator.store.errors import NotLeader, StoreError, StoreUnavailable
from orchestrator.store.etcd_keys import ClusterKeys
from orchestrator.store.etcd_records import load

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

MAX_ATTEMPTS = 50
"""Decisions per write before giving up: each failed one means another write landed."""

CATCH_UP_TIMEOUT = 5.0
"""Seconds to wait for the mirror to reach a revision etcd reported."""

MAX_KEYS_PER_TXN = 100
"""Keys one transaction changes at most. etcd refuses a transaction with more than 128
operations on either side (its default `--max-txn-ops`), and each changed key may come
with a compare: larger writes are made in parts."""


def unavailable_message(endpoints: str) -> str:
    """What an operator is told while etcd does not answer."""
    return (
        f"the etcd cluster at {endpoints} does not answer (quorum lost?): the control "
        "plane is read-only until it is back"
    )


def unavailable_reason(exc: EtcdUnavailable, endpoints: str) -> str:
    """Why etcd did not answer, without the client's own "does not answer" sentence
    (so a message that says it already does not repeat it)."""
    text = str(exc)
    said = f"the etcd cluster at {endpoints} does not answer"
    if text.startswith(said):
        text = text[len(said) :].removeprefix(" (quorum lost?)").removeprefix(":").strip()
    return text or "no member gave a reason"


class Snapshot:
    """The mirror as one decision sees it, noting the revision of every key it read."""

    def __init__(self, mirror: PrefixMirror, keys: ClusterKeys) -> None:
        self._mirror = mirror
        self._keys = keys
        self._read: dict[bytes, int] = {}

    def get(self, key: bytes, decode: Callable[[dict[str, Any]], T]) -> T | None:
        """The record at `key` (None: absent); the write holds only if it stays as read."""
        kv = self._mirror.get(key)
        self._read[key] = 0 if kv is None else kv.mod_revision
        return None if kv is None else load(key, kv.value, decode)

    def peek(self, key: bytes, decode: Callable[[dict[str, Any]], T]) -> T | None:
        """The record at `key`, not checked at commit: a key read with `get` guards it."""
        kv = self._mirror.get(key)
        return None if kv is None else load(key, kv.value, decode)

    def scan(
        self,
        prefix: bytes,
        decode: Callable[[dict[str, Any]], T],
        where: Callable[[T], bool] = lambda _: True,
        limit: int | None = None,
    ) -> list[tuple[bytes, T]]:
        """The records under `prefix` that pass `where`, by key, the first `limit` of them
        when given; each one returned is checked at commit."""
        found: list[tuple[bytes, T]] = []
        for kv in self._mirror.items(self._keys.within(prefix)):
            if limit is not None and len(found) >= limit:
                break
            record = load(kv.key, kv.value, decode)
            if where(record):
                self._read[kv.key] = kv.mod_revision
                found.append((kv.key, record))
        return found

    def keys(self, prefix: bytes) -> list[bytes]:
        """The keys under `prefix`, in order, not checked at commit."""
        return [kv.key for kv in self._mirror.items(self._keys.within(prefix))]

    def present(self, key: bytes) -> bool:
        """Whether `key` exists, not checked at commit."""
        return self._mirror.get(key) is not None

    def compares(self) -> list[Compare]:
        """The conditions under which the decision still holds."""
        return [Compare.mod_revision(key, "=", rev) for key, rev in sorted(self._read.items())]


@dataclass(frozen=True, slots=True)
class Decision(Generic[R]):
    """What a write puts and deletes, and what it returns once committed."""

    result: R
    ops: list[Op] = field(default_factory=list)


class EtcdWriter:
    """Commits decisions as transactions; keeps the fence and whether etcd answered."""

    def __init__(
        self, client: EtcdClient, mirror: PrefixMirror, keys: ClusterKeys, endpoints: str
    ) -> None:
        self._client = client
        self._mirror = mirror
        self._keys = keys
        self._leader_key = keys.leader
        self._endpoints = endpoints
        self._lock = threading.Lock()
        self._term = 0
        self._failed = False

    @property
    def term(self) -> int:
        """The term leader-only writes are fenced with (0: not fenced)."""
        with self._lock:
            return self._term

    def fence(self, term: int) -> None:
        """Leader-only writes from now on need the leader key made at `term`."""
        if term < 1:
            raise ValueError("a leader term is at least 1 (the leader key's create revision)")
        with self._lock:
            self._term = term

    def unfence(self) -> None:
        """Leader-only writes no longer check the leader key."""
        with self._lock:
            self._term = 0

    @property
    def failed(self) -> bool:
        """Whether the last write found etcd unreachable."""
        with self._lock:
            return self._failed

    def recovered(self) -> None:
        """etcd answered again (e.g. a probe): forget the failed write."""
        with self._lock:
            self._failed = False

    def write(
        self,
        decide: Callable[[Snapshot], Decision[R]],
        *,
        leader_only: bool = False,
        fenced_only: bool = False,
    ) -> R:
        """Decide on the mirror and commit, deciding again after each conflict.

        A `leader_only` write holds only while the fence's leader key stands (any
        write when unfenced); a `fenced_only` one also raises `NotLeader` unfenced.
        """
        for _ in range(MAX_ATTEMPTS):
            term = self.term if leader_only or fenced_only else 0
            if fenced_only and not term:
                raise NotLeader(
                    "this controller does not hold the leader key (it is not fenced): only "
                    "the leader takes a leader term"
                )
            snapshot = Snapshot(self._mirror, self._keys)
            decision = decide(snapshot)
            if not decision.ops:
                return decision.result
            compares = snapshot.compares()
            if term:
                compares.append(Compare.create_revision(self._leader_key, "=", term))
            failure = [Op.get(self._leader_key)] if term else []
            result = self._commit(compares, decision.ops, failure)
            if result.succeeded:
                if not self._mirror.wait_for(result.revision, CATCH_UP_TIMEOUT):
                    # The write is in etcd; only this store's reads lag behind it.
                    log.warning("the etcd mirror lags behind revision %d", result.revision)
                return decision.result
            if term:
                self._check_leader(term, result.gets[0])
            if not self._mirror.wait_for(result.revision, CATCH_UP_TIMEOUT):
                raise StoreUnavailable(
                    f"the watch on the etcd cluster at {self._endpoints} lags behind (revision "
                    f"{result.revision}); the write was not made, retry once it catches up"
                )
        raise StoreError(
            f"the state in etcd at {self._endpoints} kept changing under this write "
            f"({MAX_ATTEMPTS} tries); retry, and check that the controllers agree on the cluster"
        )

    def _commit(self, compares: list[Compare], ops: list[Op], failure: list[Op]) -> TxnResult:
        try:
            result = self._client.txn(compares, ops, failure)
        except EtcdUnavailable as exc:
            with self._lock:
                self._failed = True
            reason = unavailable_reason(exc, self._endpoints)
            raise StoreUnavailable(f"{unavailable_message(self._endpoints)} ({reason})") from exc
        except EtcdError as exc:
            raise StoreError(f"etcd refused a write of the controller's state: {exc}") from exc
        self.recovered()
        return result

    def _check_leader(self, term: int, leader: list[KeyValue]) -> None:
        held = leader[0].create_revision if leader else 0
        if held != term:
            now = f"made at revision {held}" if held else "held by no controller"
            raise NotLeader(
                f"this controller's leadership is over (it made the leader key at revision "
                f"{term}; the key is now {now}): it no longer leads and stops making "
                "leader-only writes"
            )
