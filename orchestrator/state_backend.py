"""Opening the controller's state where its configuration says, with the matching way of
deciding who leads: SQLite in the data folder (one controller, always the leader) or an
etcd cluster (several controllers, one elected)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from orchestrator.config import ControllerConfig
from orchestrator.leadership import (
    ControllerIdentity,
    ElectedLeadership,
    Leadership,
    SoleLeadership,
)
from orchestrator.store import SqliteStore, StateStore

STORE_FILE = "controller.db"


class StateBackend:
    """The store, the leadership over it, and how to let both go."""

    def __init__(
        self,
        store: StateStore,
        leadership: Callable[[ControllerIdentity], Leadership],
        closers: contextlib.ExitStack,
    ) -> None:
        self.store = store
        self._leadership = leadership
        self._closers = closers

    def leadership(self, address: str) -> Leadership:
        """How this controller, serving its API at `address`, learns whether it leads (not
        started yet; stopped by `close`)."""
        made = self._leadership(ControllerIdentity(self.store.controller_id, address))
        # Closed before the store: stepping down hands over while the connection is up.
        self._closers.callback(made.close)
        return made

    def close(self) -> None:
        """Step down, then close the store and its connections."""
        self._closers.close()


def open_backend(config: ControllerConfig) -> StateBackend:
    """Open the configured store."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    closers = contextlib.ExitStack()
    try:
        if not config.store:
            sqlite = SqliteStore.open(config.data_dir / STORE_FILE)
            closers.callback(sqlite.close)
            return StateBackend(sqlite, SoleLeadership, closers)
        return _open_etcd(config, closers)
    except BaseException:
        closers.close()
        raise


def _open_etcd(config: ControllerConfig, closers: contextlib.ExitStack) -> StateBackend:
    # Imported here: a controller on SQLite never loads the etcd client.
    from orchestrator.etcd.client import EtcdClient
    from orchestrator.etcd.target import parse_store_url
    from orchestrator.store.etcd_store import EtcdStore

    target = parse_store_url(
        config.store, ca=config.etcd_ca, cert=config.etcd_cert, key=config.etcd_key
    )
    store = EtcdStore.open(target, data_dir=config.data_dir, cluster_name=config.cluster)
    closers.callback(store.close)
    # The election has a connection of its own: a busy store never delays a keepalive.
    client = EtcdClient(target)
    closers.callback(client.close)
    key, ttl = store.leader_key, config.lease_ttl_s
    return StateBackend(store, lambda me: ElectedLeadership(client, key, me, ttl=ttl), closers)
