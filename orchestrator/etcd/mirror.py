"""Everything under a key prefix, in memory, kept current by a watch."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edgefleet_common.backoff import Backoff
from orchestrator.etcd.client import EtcdClient, WatchBatch, WatchStream
from orchestrator.etcd.errors import EtcdCompacted, EtcdError, EtcdUnavailable
from orchestrator.etcd.txn import KeyValue

log = logging.getLogger(__name__)

RETRY_FIRST = 0.1
RETRY_MOST = 2.0
"""Seconds between attempts to watch again after a break (doubling up to this)."""
EVENT_WAIT = 0.05
"""How long `wait_for` waits for events before asking etcd whether any are due."""


class PrefixMirror:
    """Everything under a prefix, in memory, kept current by a watch (a background thread).

    Reads never touch etcd: during an outage they serve the last data known, and
    `healthy` says so. After a break the mirror resumes the watch from its revision,
    or reads everything again when etcd has compacted that history. A revision with
    no event under the prefix is reached by asking etcd whether anything under the
    prefix changed since the mirror's revision (`EtcdClient.changed_since`).
    """

    def __init__(
        self,
        client: EtcdClient,
        prefix: bytes,
        on_change: Callable[[list[bytes]], None] | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._on_change = on_change
        self._cond = threading.Condition()
        self._data: dict[bytes, KeyValue] = {}
        self._areas: dict[bytes, dict[bytes, KeyValue]] = {}
        """The same keys by their first segment after the prefix (`events/`, `nodes/`):
        a read of one area never walks the others."""
        self._revision = 0
        self._healthy = False
        self._watch_started = 0
        """etcd's revision when the current watch started: healthy once caught up to it."""
        self._stream: WatchStream | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(RETRY_FIRST, RETRY_MOST)

    def start(self, timeout: float = 5.0) -> None:
        """Read everything (retrying for up to `timeout` s, else EtcdUnavailable), then watch."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._load()
                break
            except EtcdUnavailable:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(left, RETRY_FIRST))
        self._thread = threading.Thread(
            target=self._run, name=f"etcd-mirror {self._prefix!r}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop watching (reads keep serving what is known)."""
        self._stop.set()
        with self._cond:
            stream = self._stream
            self._healthy = False
        if stream is not None:
            stream.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def get(self, key: bytes) -> KeyValue | None:
        """The key (a full key, prefix included) as last seen, or None."""
        with self._cond:
            return self._data.get(key)

    def items(self, subprefix: bytes = b"") -> list[KeyValue]:
        """Every key under prefix + `subprefix`, sorted by key."""
        start = self._prefix + subprefix
        with self._cond:
            pool = self._areas.get(self._area(start), {}) if b"/" in subprefix else self._data
            found = [kv for key, kv in pool.items() if key.startswith(start)]
        return sorted(found, key=lambda kv: kv.key)

    def _area(self, key: bytes) -> bytes:
        rest = key[len(self._prefix) :]
        cut = rest.find(b"/")
        return rest[: cut + 1] if cut >= 0 else rest

    def _put(self, kv: KeyValue) -> None:
        self._data[kv.key] = kv
        self._areas.setdefault(self._area(kv.key), {})[kv.key] = kv

    def _drop(self, key: bytes) -> None:
        self._data.pop(key, None)
        self._areas.get(self._area(key), {}).pop(key, None)

    @property
    def revision(self) -> int:
        """The etcd revision the data is current to."""
        with self._cond:
            return self._revision

    @property
    def healthy(self) -> bool:
        """Whether the watch is up and caught up (False during an outage)."""
        with self._cond:
            return self._healthy

    def wait_for(self, revision: int, timeout: float) -> bool:
        """Until the data is current to `revision` (True), or `timeout` s pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._revision >= revision,
                    min(EVENT_WAIT, max(0.0, deadline - time.monotonic())),
                )
                if self._revision >= revision:
                    return True
            if time.monotonic() >= deadline:
                return False
            try:
                self._catch_up()
            except EtcdError as error:
                log.debug("etcd mirror of %r cannot check its revision: %s", self._prefix, error)
                time.sleep(min(EVENT_WAIT * 4, max(0.0, deadline - time.monotonic())))

    def _run(self) -> None:
        reload = False
        while not self._stop.is_set():
            try:
                if reload:
                    self._load()
                    reload = False
                self._follow()
            except EtcdCompacted as error:
                log.info("etcd mirror of %r reads everything again: %s", self._prefix, error)
                reload = True
            except EtcdError as error:
                self._broken(error)
                self._stop.wait(self._backoff.next())

    def _follow(self) -> None:
        stream = self._client.watch_prefix(self._prefix, self.revision + 1, self._stop)
        with stream:
            with self._cond:
                self._stream = stream
                self._watch_started = stream.created_revision
            try:
                self._catch_up()
                for batch in stream:
                    self._backoff.reset()
                    self._apply(batch)
                    if not self.healthy:
                        self._catch_up()
            finally:
                with self._cond:
                    self._stream = None

    def _catch_up(self) -> None:
        """Move to etcd's revision when nothing under the prefix changed since ours."""
        with self._cond:
            revision, count = self._revision, len(self._data)
        written, now_count, now = self._client.changed_since(self._prefix, revision)
        with self._cond:
            if not written and now_count == count and self._revision == revision:
                self._revision = max(self._revision, now)
                self._cond.notify_all()
        self._check_healthy()

    def _check_healthy(self) -> None:
        with self._cond:
            current = (
                self._stream is not None
                and not self._healthy
                and self._revision >= self._watch_started
            )
            if current:
                self._healthy = True
        if current:
            log.info("etcd mirror of %r is current (revision %d)", self._prefix, self.revision)

    def _load(self) -> None:
        kvs, revision = self._client.get_prefix(self._prefix)
        fresh = {kv.key: kv for kv in kvs}
        with self._cond:
            old = self._data
            changed = sorted(k for k in old.keys() | fresh.keys() if old.get(k) != fresh.get(k))
            self._data, self._areas = {}, {}
            for kv in kvs:
                self._put(kv)
            self._revision = max(self._revision, revision)
            self._cond.notify_all()
        self._notify(changed)

    def _apply(self, batch: WatchBatch) -> None:
        changed: list[bytes] = []
        with self._cond:
            for kind, kv in batch.events:
                if kind == "put":
                    self._put(kv)
                else:
                    self._drop(kv.key)
                changed.append(kv.key)
            self._revision = max(self._revision, batch.revision)
            self._cond.notify_all()
        self._check_healthy()
        self._notify(sorted(set(changed)))

    def _broken(self, error: EtcdError) -> None:
        with self._cond:
            was_healthy, self._healthy = self._healthy, False
        if was_healthy:
            log.warning("etcd mirror of %r serves its last data: %s", self._prefix, error)

    def _notify(self, keys: list[bytes]) -> None:
        if not keys or self._on_change is None:
            return
        try:
            self._on_change(keys)
        except Exception:
            log.exception("etcd mirror of %r: a change callback failed", self._prefix)
