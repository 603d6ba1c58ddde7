"""Leader election on one etcd key held by a lease: who leads, under which term, until when."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from orchestrator.etcd.client import EtcdClient
from orchestrator.etcd.errors import EtcdCompacted, EtcdError
from orchestrator.etcd.txn import Compare, KeyValue, Op

log = logging.getLogger(__name__)

SAFETY_MARGIN = 0.5
"""Seconds a leader stops acting before etcd could expire its lease (clock rate, delays)."""


@dataclass(frozen=True, slots=True)
class LeaderState:
    """This controller's view of the election."""

    role: Literal["leader", "follower", "unknown"]
    """unknown: etcd unreachable, leader not known."""
    term: int
    """The leader key's create_revision: this controller's when leading, else the leader's."""
    leader: bytes
    """The leader key's value (the leader's identity), or b""."""
    deadline: float = 0.0
    """Leader only: the time.monotonic() after which it must stop acting."""


UNKNOWN = LeaderState("unknown", 0, b"")


class LeaderElection:
    """Campaign for `key` with a lease of `ttl` s, keep it alive, and follow who leads.

    A background thread renews the lease every ttl/3 s; each renewal sent at time t
    (and confirmed) lets the leader act until t + ttl - SAFETY_MARGIN, before etcd can
    expire the lease. A follower watches the key, campaigns as soon as it is deleted
    and at least every ttl/3 s. `on_change` runs on that thread when the role, term or
    leader changes.
    """

    def __init__(
        self,
        client: EtcdClient,
        key: bytes,
        identity: bytes,
        *,
        ttl: int = 3,
        on_change: Callable[[LeaderState], None] | None = None,
    ) -> None:
        if ttl < 2:
            raise ValueError(f"a leader lease needs a TTL of 2 seconds or more, not {ttl}")
        self._client = client
        self._key = key
        self._identity = identity
        self._ttl = ttl
        self._interval = ttl / 3
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = UNKNOWN
        self._lease = 0
        self._lease_pending = 0
        """A lease this controller campaigned with but did not hear back about."""
        self._stop = threading.Event()
        self._watch_stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start campaigning in the background."""
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop; a leader revokes its lease, so a follower takes over at once."""
        self._stop.set()
        self._watch_stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def state(self) -> LeaderState:
        """The role, term and leader as last seen."""
        with self._lock:
            return self._state

    def leading(self) -> int:
        """The term while leading and before the deadline, else 0."""
        state = self.state()
        if state.role == "leader" and time.monotonic() < state.deadline:
            return state.term
        return 0

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if self._lease:
                        self._keep_leading()
                    else:
                        self._campaign_or_follow()
                except EtcdError as error:
                    self._cut_off(error)
        finally:
            self._resign()

    def _campaign_or_follow(self) -> None:
        read = self._client.txn([], [Op.get(self._key)])
        current = read.gets[0][0] if read.gets[0] else None
        if current is None:
            current = self._campaign()
            if current is None:
                return
        if self._lease_pending and current.lease == self._lease_pending:
            # won on an earlier attempt whose answer was lost: confirm with a keepalive
            self._lease, self._lease_pending = current.lease, 0
            return
        self._set(LeaderState("follower", current.create_revision, current.value))
        self._follow(read.revision + 1)

    def _campaign(self) -> KeyValue | None:
        """Try to create the key; None when this controller now leads, else the holder."""
        sent = time.monotonic()
        lease = self._client.lease_grant(self._ttl)
        self._lease_pending = lease
        result = self._client.txn(
            [Compare.create_revision(self._key, "=", 0)],
            [Op.put(self._key, self._identity, lease=lease)],
            [Op.get(self._key)],
        )
        if result.succeeded:
            self._lease, self._lease_pending = lease, 0
            deadline = sent + self._ttl - SAFETY_MARGIN
            self._set(LeaderState("leader", result.revision, self._identity, deadline))
            return None
        holder = result.gets[0][0] if result.gets[0] else None
        if holder is None or holder.lease != lease:
            self._lease_pending = 0
            self._client.lease_revoke(lease)
        return holder

    def _keep_leading(self) -> None:
        lease = self._lease
        sent = time.monotonic()
        ttl = self._client.lease_keepalive(lease)
        if ttl <= 0:
            self._lost("its lease expired")
            return
        current = self._client.get(self._key)
        if current is None or current.lease != lease:
            self._lost("the leader key was deleted or replaced")
            self._client.lease_revoke(lease)
            return
        deadline = sent + min(ttl, self._ttl) - SAFETY_MARGIN
        self._set(LeaderState("leader", current.create_revision, current.value, deadline))
        self._stop.wait(max(0.0, sent + self._interval - time.monotonic()))

    def _follow(self, start_revision: int) -> None:
        """Watch the key until it is deleted or ttl/3 s pass (then campaign again)."""
        self._watch_stop.clear()
        if self._stop.is_set():
            return
        timer = threading.Timer(self._interval, self._watch_stop.set)
        timer.start()
        try:
            with self._client.watch_prefix(self._key, start_revision, self._watch_stop) as stream:
                for batch in stream:
                    for kind, kv in batch.events:
                        if kv.key != self._key:
                            continue
                        if kind == "delete":
                            log.info("the leader key was deleted: campaigning")
                            return
                        self._set(LeaderState("follower", kv.create_revision, kv.value))
        except EtcdCompacted:
            return
        finally:
            timer.cancel()

    def _lost(self, why: str) -> None:
        log.warning("leadership lost (term %d): %s", self.state().term, why)
        self._lease = 0
        self._set(UNKNOWN)

    def _cut_off(self, error: EtcdError) -> None:
        """etcd did not answer: a leader keeps acting until its deadline, then stops."""
        state = self.state()
        if state.role == "leader":
            left = state.deadline - time.monotonic()
            if left > 0:
                log.warning("etcd unreachable, leading for %.1f s more: %s", left, error)
                self._stop.wait(min(left, self._interval))
                return
            log.warning("leadership suspended (term %d): etcd unreachable: %s", state.term, error)
        elif state.role == "follower":
            log.warning("leader unknown: etcd unreachable: %s", error)
        else:
            log.debug("etcd unreachable: %s", error)
        self._set(UNKNOWN)
        self._stop.wait(self._interval)

    def _resign(self) -> None:
        lease, self._lease = self._lease, 0
        if lease:
            try:
                self._client.lease_revoke(lease)
                log.info("leadership handed over (lease revoked)")
            except EtcdError as error:
                log.warning(
                    "could not revoke the leader lease, it expires in %d s: %s", self._ttl, error
                )
        self._set(UNKNOWN)

    def _set(self, state: LeaderState) -> None:
        with self._lock:
            old, self._state = self._state, state
        if (old.role, old.term, old.leader) == (state.role, state.term, state.leader):
            return
        if state.role == "leader":
            log.info("leading as term %d", state.term)
        elif state.role == "follower":
            log.info("following %s (term %d)", state.leader.decode(errors="replace"), state.term)
        if self._on_change is not None:
            try:
                self._on_change(state)
            except Exception:
                log.exception("a leadership change callback failed")
