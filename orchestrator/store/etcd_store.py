"""`EtcdStore`: the controller's state in etcd, shared by every controller of the cluster.

Reads are served from memory (a `PrefixMirror` of `/edgefleet/<cluster>/`, kept
current by a watch), so they go on while etcd is unreachable. Writes are etcd
transactions that hold only if what they read is unchanged (see `EtcdWriter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from edgefleet_common.cluster import DEFAULT_CLUSTER
from orchestrator.etcd.client import EtcdClient
from orchestrator.etcd.errors import EtcdError, EtcdUnavailable
from orchestrator.etcd.target import EtcdTarget
from orchestrator.store import etcd_plans as plans
from orchestrator.store import etcd_records as records
from orchestrator.store.assignment import NodeAssignment, check_forced
from orchestrator.store.errors import StoreError, StoreUnavailable
from orchestrator.store.etcd_identity import check_meta, controller_id
from orchestrator.store.etcd_keys import ClusterKeys
from orchestrator.store.etcd_trust_store import EtcdTrustRecords
from orchestrator.store.etcd_writer import unavailable_reason
from orchestrator.store.events import DEFAULT_MAX_EVENTS, EventRow, Severity
from orchestrator.store.node_marks import Mark, NodeMarkRow
from orchestrator.store.nodes import DiscoveredBy, NodeRow
from orchestrator.store.revisions import DeploymentRow, Revision
from orchestrator.store.state_store import StateStore

OPEN_TIMEOUT = 5.0
"""Seconds to wait for the first full read of the cluster's keys."""


class EtcdStore(EtcdTrustRecords):
    """The controller's state in etcd, under `/edgefleet/<cluster>/` (see `etcd_keys`).

    Several controllers open the same cluster at once; the leader fences its
    leader-only writes with its term (`fence`). `on_change` callbacks run on the
    mirror's watch thread, for changes by any controller, this one included:
    keep them short and hand work over to the caller's own loop. Every call is
    safe from any thread.
    """

    @classmethod
    def open(
        cls,
        target: EtcdTarget,
        *,
        data_dir: Path,
        cluster_name: str | None = None,
        max_events: int = DEFAULT_MAX_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> EtcdStore:
        """Open the cluster's state in etcd (recording the cluster on first use).

        `data_dir` keeps this controller's id; `cluster_name` (default
        `default`) chooses the keys. Raises `StoreUnavailable` when no etcd
        member answers, `StoreError` when the keys belong to another cluster.
        """
        endpoints = target.describe()
        if cluster_name is not None and not cluster_name:
            raise ValueError("cluster_name must not be empty")
        name = cluster_name or DEFAULT_CLUSTER
        keys = ClusterKeys(name)
        identity = controller_id(data_dir)
        client = EtcdClient(target)
        try:
            check_meta(client, keys, name)
            store = cls(
                client,
                keys,
                controller_id=identity,
                cluster_name=name,
                max_events=max_events,
                clock=clock,
            )
            store._start(OPEN_TIMEOUT)
            return store
        except EtcdUnavailable as exc:
            client.close()
            raise StoreUnavailable(
                f"cannot open the store: the etcd cluster at {endpoints} does not answer "
                f"({unavailable_reason(exc, endpoints)}); check that etcd runs and that this "
                "machine reaches it"
            ) from exc
        except EtcdError as exc:
            client.close()
            raise StoreError(f"cannot open the cluster's state in etcd: {exc}") from exc
        except BaseException:
            client.close()
            raise

    def __enter__(self) -> EtcdStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        self.close()

    # Revisions and deployments

    def add_revision(
        self,
        deployment: str,
        *,
        source: str,
        manifest: str,
        desired_json: str,
        digest: str,
        cause: str,
    ) -> Revision:
        """Store the next revision of `deployment` (from 1) and make it current, undeleted."""
        now = self._clock()
        return self._write(
            lambda s: plans.add_revision(
                s,
                self._keys,
                deployment,
                source=source,
                manifest=manifest,
                desired_json=desired_json,
                digest=digest,
                cause=cause,
                now=now,
            )
        )

    def current(self) -> list[Revision]:
        """The current revision of each deployment that is not deleted, by name."""
        # The gateway asks on every request: remembered until the mirror moves on.
        at = self._mirror.revision
        cached = self._current
        if cached is not None and cached[0] == at:
            return list(cached[1])
        current = []
        for row in self.deployments():
            if not row.deleted:
                revision = self.revision(row.name, row.current_revision)
                if revision is not None:
                    current.append(revision)
        self._current = (at, current)
        return list(current)

    def revision(self, deployment: str, number: int) -> Revision | None:
        """One revision of a deployment, or None."""
        return self._record(self._keys.revision(deployment, number), records.revision_of)

    def revisions(self, deployment: str) -> list[Revision]:
        """Every revision of a deployment, newest first."""
        found = self._records(self._keys.revision(deployment), records.revision_of)
        return found[::-1]

    def deployments(self) -> list[DeploymentRow]:
        """Every deployment ever applied, deleted ones included, by name."""
        rows = self._records(self._keys.deployment(), records.deployment_of)
        return sorted(rows, key=lambda row: row.name)

    def delete_deployment(self, name: str) -> bool:
        """Mark a deployment deleted (its revisions stay); False if unknown or deleted."""
        now = self._clock()
        return self._write(lambda s: plans.delete_deployment(s, self._keys, name, now))

    # Assignment and routing table

    def assignment(self) -> dict[str, NodeAssignment]:
        """What each node should run, by node id."""
        rows = self._records(self._keys.assignment(), records.assignment_of)
        return {row.node_id: row for row in sorted(rows, key=lambda row: row.node_id)}

    def save_assignment(
        self, changed: Mapping[str, str], *, force: Collection[str] = ()
    ) -> dict[str, int]:
        """Save nodes' desired state; each changed (or forced) node gets a new generation
        from the cluster's one counter (leader-only).

        etcd caps the operations of one transaction, so a large batch is saved in
        parts of at most `MAX_KEYS_PER_TXN` keys, in node order, each fenced and each
        holding only if the counter is as read. A crash (or lost leadership) between
        two parts keeps the parts made: each node's saved state is whole, old or
        new, the generation counter never goes back, and the reconciler's next pass
        saves the rest.
        """
        forced = check_forced(changed, force)
        now = self._clock()
        saved: dict[str, int] = {}
        while part := self._write(
            lambda s: plans.save_assignment(s, self._keys, changed, forced, now, saved),
            leader_only=True,
        ):
            saved.update(part)
        return saved

    def last_generation(self) -> int:
        """The highest generation handed out or raised to (0 on a new cluster)."""
        return self._record(self._keys.generation, records.counter_of) or 0

    def raise_generation_floor(self, floor: int) -> int:
        """Make the generation counter at least `floor`; return its value (leader-only)."""
        return self._write(
            lambda s: plans.raise_generation_floor(s, self._keys, floor), leader_only=True
        )

    def routes_generation(self) -> int:
        """The generation of the last routing table made (0: none yet)."""
        stored = self._record(self._keys.routes, records.routes_of)
        return 0 if stored is None else stored[0]

    def number_routes(self, content_key: str, *, floor: int = 0) -> int:
        """The generation of a routing table with this content (leader-only; see
        `SqliteStore.number_routes`)."""
        return self._write(
            lambda s: plans.number_routes(s, self._keys, content_key, floor), leader_only=True
        )

    # Nodes and their marks

    def upsert_node(
        self,
        node_id: str,
        *,
        address: str,
        discovered_by: DiscoveredBy,
        labels: Mapping[str, str],
        last_seen: float,
    ) -> NodeRow:
        """Record a node or update it; its first sighting is kept."""
        return self._write(
            lambda s: plans.upsert_node(
                s,
                self._keys,
                node_id,
                address=address,
                discovered_by=discovered_by,
                labels=labels,
                last_seen=last_seen,
            )
        )

    def nodes(self) -> list[NodeRow]:
        """Every known node, by id."""
        return self._records(self._keys.node(), records.node_of)

    def forget_node(self, node_id: str) -> bool:
        """Remove a node and its assignment; False if neither was known (leader-only)."""
        return self._write(lambda s: plans.forget_node(s, self._keys, node_id), leader_only=True)

    def mark_node(self, node_id: str, mark: Mark, *, reason: str = "") -> NodeMarkRow:
        """Cordon a node or drain it (replacing an earlier mark)."""
        now = self._clock()
        return self._write(lambda _: plans.mark_node(self._keys, node_id, mark, reason, now))

    def mark_drained(self, node_id: str) -> NodeMarkRow | None:
        """Note that a draining node is empty; None when it is not draining (leader-only)."""
        now = self._clock()
        return self._write(
            lambda s: plans.mark_drained(s, self._keys, node_id, now), leader_only=True
        )

    def unmark_node(self, node_id: str) -> bool:
        """Uncordon a node; False when it was neither cordoned nor draining."""
        return self._write(lambda s: plans.unmark_node(s, self._keys, node_id))

    def node_marks(self) -> dict[str, NodeMarkRow]:
        """Every cordoned or draining node, by id."""
        return {row.node_id: row for row in self._records(self._keys.mark(), records.mark_of)}

    # Events

    def add_event(
        self,
        *,
        severity: Severity,
        reason: str,
        object: str,
        node_id: str = "",
        message: str,
    ) -> EventRow:
        """Append an event; the oldest are trimmed so that at most `max_events` remain."""
        now = self._clock()
        return self._write(
            lambda s: plans.add_event(
                s,
                self._keys,
                severity=severity,
                reason=reason,
                object=object,
                node_id=node_id,
                message=message,
                now=now,
                keep=self._max_events,
            )
        )

    def events(
        self, after_id: int = 0, limit: int | None = None, object: str | None = None
    ) -> list[EventRow]:
        """Events after `after_id`, oldest first; with `limit`, only the newest `limit`."""
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        self._check_open()
        prefix = self._keys.event()
        found = [
            records.load(kv.key, kv.value, records.event_of)
            for kv in self._items(prefix)
            if int(kv.key[len(prefix) :]) > after_id
        ]
        if object is not None:
            found = [row for row in found if row.object == object]
        if limit is not None:
            found = found[len(found) - limit :] if limit else []
        return found


_SATISFIES_PROTOCOL: type[StateStore] = EtcdStore
