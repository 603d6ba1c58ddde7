"""What every `EtcdStore` call stands on: the mirror it reads, the writer, health and fence."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from orchestrator.etcd.client import EtcdClient
from orchestrator.etcd.errors import EtcdError
from orchestrator.etcd.mirror import PrefixMirror
from orchestrator.etcd.txn import KeyValue
from orchestrator.store import etcd_plans as plans
from orchestrator.store import etcd_records as records
from orchestrator.store.changes import ChangeCallback, ChangeListeners
from orchestrator.store.errors import StoreError
from orchestrator.store.etcd_keys import ClusterKeys
from orchestrator.store.etcd_writer import Decision, EtcdWriter, Snapshot, unavailable_message
from orchestrator.store.events import DEFAULT_MAX_EVENTS
from orchestrator.store.members import DEFAULT_WITHIN_S, MemberRow, seen_within
from orchestrator.store.revisions import Revision
from orchestrator.store.state_store import StoreHealth

T = TypeVar("T")

log = logging.getLogger(__name__)


class EtcdStoreBase:
    """The connection, mirror and writer that `EtcdStore`'s calls share (see there)."""

    def __init__(
        self,
        client: EtcdClient,
        keys: ClusterKeys,
        *,
        controller_id: str,
        cluster_name: str,
        max_events: int = DEFAULT_MAX_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._client = client
        self._keys = keys
        self._controller_id = controller_id
        self._cluster_name = cluster_name
        self._max_events = max_events
        self._clock = clock
        self._endpoints = client.target.describe()
        self._changes = ChangeListeners()
        self._mirror = PrefixMirror(client, keys.prefix, on_change=self._mirror_changed)
        self._writer = EtcdWriter(client, self._mirror, keys, self._endpoints)
        self._closed = False
        self._current: tuple[int, list[Revision]] | None = None
        self._probe_lock = threading.Lock()
        self._probing = False

    def _start(self, timeout: float) -> None:
        """Read every key, then wait (up to `timeout` s) for the watch to be current."""
        self._mirror.start(timeout)
        deadline = time.monotonic() + timeout
        while not self._mirror.healthy and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._mirror.healthy:
            log.warning("the etcd watch is not current yet; the store is read-only until it is")

    @property
    def controller_id(self) -> str:
        """This controller's id, kept in its data folder."""
        return self._controller_id

    @property
    def cluster_name(self) -> str:
        """The cluster whose keys this store holds."""
        return self._cluster_name

    @property
    def leader_key(self) -> bytes:
        """The key the cluster's leader election holds; its create_revision is the term."""
        return self._keys.leader

    def close(self) -> None:
        """Stop the watch and close the connection; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._mirror.close()
            self._client.close()

    def health(self) -> StoreHealth:
        """Writable while the watch is up and the last write reached etcd."""
        if self._closed:
            return StoreHealth("etcd", False, "the store is closed; open it again")
        unavailable = StoreHealth("etcd", False, unavailable_message(self._endpoints))
        if not self._mirror.healthy:
            return unavailable
        if self._writer.failed:
            self._probe()
            return unavailable
        prefix = self._keys.prefix.decode()
        return StoreHealth("etcd", True, f"etcd at {self._endpoints}, keys under {prefix}")

    def _probe(self) -> None:
        """After a failed write, ask etcd once in the background whether it answers again:
        `health()` (asked by `status`) answers at once, from what is known."""
        with self._probe_lock:
            if self._probing:
                return
            self._probing = True

        def probe() -> None:
            try:
                self._client.get(self._keys.meta)
            except EtcdError as exc:
                log.debug("etcd is still out of reach (asked again at the next health): %s", exc)
            else:
                self._writer.recovered()
            finally:
                with self._probe_lock:
                    self._probing = False

        threading.Thread(target=probe, name="etcd-store-probe", daemon=True).start()

    def fence(self, term: int) -> None:
        """Leader-only writes from now on need the leader key made at `term`."""
        self._writer.fence(term)

    def unfence(self) -> None:
        """Leader-only writes no longer check the leader key."""
        self._writer.unfence()

    def on_change(self, callback: ChangeCallback) -> None:
        """Call `callback` (on the watch thread) with the areas of every change seen."""
        self._changes.add(callback)

    # Leader terms and the cluster's controllers

    def begin_term(self, floor: int = 0) -> int:
        """Take a new leader term: one above the last and above `floor`; return it.

        Only the leader takes a term: the write is fenced, and raises `NotLeader`
        when this controller is not fenced or its leader key is gone.
        """
        return self._write(lambda s: plans.begin_term(s, self._keys, floor), fenced_only=True)

    def current_term(self) -> int:
        """The term the last leader took (0: none yet)."""
        return self._record(self._keys.term, records.counter_of) or 0

    def register_member(self, controller_id: str, address: str, role: str) -> None:
        """Record that a controller runs now, where its API listens and its role."""
        row = MemberRow(controller_id, address, role, self._clock())
        self._write(lambda _: plans.register_member(self._keys, row))

    def members(self, within_s: float = DEFAULT_WITHIN_S) -> list[MemberRow]:
        """The controllers registered in the last `within_s` seconds, by id."""
        rows = self._records(self._keys.member(), records.member_of)
        return seen_within(rows, self._clock(), within_s)

    def _mirror_changed(self, keys: list[bytes]) -> None:
        self._changes.notify({area for key in keys if (area := self._keys.area(key))})

    # Reading the mirror

    def _record(self, key: bytes, decode: Callable[[dict[str, Any]], T]) -> T | None:
        self._check_open()
        kv = self._mirror.get(key)
        return None if kv is None else records.load(key, kv.value, decode)

    def _records(self, prefix: bytes, decode: Callable[[dict[str, Any]], T]) -> list[T]:
        self._check_open()
        return [records.load(kv.key, kv.value, decode) for kv in self._items(prefix)]

    def _items(self, prefix: bytes) -> list[KeyValue]:
        self._check_open()
        return self._mirror.items(self._keys.within(prefix))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the etcd store is closed; open it again")

    def _write(
        self,
        decide: Callable[[Snapshot], Decision[T]],
        *,
        leader_only: bool = False,
        fenced_only: bool = False,
    ) -> T:
        self._check_open()
        return self._writer.write(decide, leader_only=leader_only, fenced_only=fenced_only)
