"""Who decides: the one controller of a SQLite store, or the leader elected through etcd.

Every controller watches the nodes and serves reads and its gateway; only the one
that holds leadership places work and pushes to nodes. Leadership is shown by a
token: on etcd the revision at which this controller created the leader key (the
store's writes for the leader are fenced by it), on SQLite always 1. The term pushed
to nodes is taken from the store once leading (see `control_role`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from orchestrator.etcd.client import EtcdClient
    from orchestrator.etcd.election import LeaderElection, LeaderState

Role = Literal["single", "leader", "standby"]


@dataclass(frozen=True, slots=True)
class LeaderView:
    """This controller's role and who leads, for status."""

    role: Role
    leader_id: str
    """The leader's controller id ("": none known)."""
    leader_address: str


@dataclass(frozen=True, slots=True)
class ControllerIdentity:
    """What a leader writes into the leader key: enough for others to name and reach it."""

    controller_id: str
    address: str

    def encode(self) -> bytes:
        """The leader key's value."""
        return json.dumps({"id": self.controller_id, "address": self.address}).encode()

    @classmethod
    def decode(cls, value: bytes) -> ControllerIdentity:
        """Read a leader key's value; an unreadable one names nobody."""
        try:
            fields = json.loads(value)
            return cls(str(fields["id"]), str(fields["address"]))
        except (ValueError, KeyError, TypeError):
            return cls("", "")


class Leadership(Protocol):
    """Whether this controller may act now, and who leads."""

    def token(self) -> int:
        """Non-zero while this controller leads (and may act); 0 when it must not."""
        ...

    def view(self) -> LeaderView:
        """The role and the leader, for status."""
        ...

    def start(self, on_change: Callable[[], None]) -> None:
        """Begin; `on_change()` runs on the event loop whenever the role may have changed."""
        ...

    def close(self) -> None:
        """Step down (at once, so that another controller can take over)."""
        ...


class SoleLeadership:
    """A controller on a SQLite store leads alone: its data folder's lock keeps out a
    second one."""

    def __init__(self, identity: ControllerIdentity) -> None:
        self._identity = identity

    def token(self) -> int:
        """Always leading."""
        return 1

    def view(self) -> LeaderView:
        """Role `single`."""
        return LeaderView("single", self._identity.controller_id, self._identity.address)

    def start(self, on_change: Callable[[], None]) -> None:
        """Leading from the start."""
        asyncio.get_running_loop().call_soon(on_change)

    def close(self) -> None:
        """Nothing to hand over."""


class ElectedLeadership:
    """Leadership through an etcd lease on the cluster's leader key."""

    def __init__(
        self, client: EtcdClient, key: bytes, identity: ControllerIdentity, *, ttl: int
    ) -> None:
        self._client = client
        self._key = key
        self._identity = identity
        self._ttl = ttl
        self._election: LeaderElection | None = None

    def token(self) -> int:
        """The leader key's create revision while this controller holds the lease (and
        before its deadline)."""
        return self._election.leading() if self._election is not None else 0

    def view(self) -> LeaderView:
        """Leader or standby, and who leads (nobody known while etcd is out of reach)."""
        if self._election is None:
            return LeaderView("standby", "", "")
        state: LeaderState = self._election.state()
        leader = ControllerIdentity.decode(state.leader)
        role: Role = "leader" if self._election.leading() else "standby"
        return LeaderView(role, leader.controller_id, leader.address)

    def start(self, on_change: Callable[[], None]) -> None:
        """Campaign in the background; changes are handed to the event loop."""
        from orchestrator.etcd.election import LeaderElection

        loop = asyncio.get_running_loop()

        def changed(_: LeaderState) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(on_change)

        self._election = LeaderElection(
            self._client, self._key, self._identity.encode(), ttl=self._ttl, on_change=changed
        )
        self._election.start()

    def close(self) -> None:
        """Give up the lease (another controller takes over at once)."""
        if self._election is not None:
            self._election.close()
