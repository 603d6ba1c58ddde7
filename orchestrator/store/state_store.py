"""`StateStore`: what the controller needs from its state store, whichever backend holds it.

Two backends satisfy it: `SqliteStore` (one file, one controller) and `EtcdStore`
(an etcd cluster shared by several controllers, one of them the leader).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from orchestrator.store.assignment import NodeAssignment
from orchestrator.store.credentials import CertificateRow, CredentialKind, CredentialRow
from orchestrator.store.events import EventRow, Severity
from orchestrator.store.members import MemberRow
from orchestrator.store.node_marks import Mark, NodeMarkRow
from orchestrator.store.nodes import DiscoveredBy, NodeRow
from orchestrator.store.revisions import DeploymentRow, Revision

StoreKind = Literal["sqlite", "etcd"]


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Whether the store takes writes now, and what to tell an operator when it does not."""

    kind: StoreKind
    writable: bool
    detail: str
    """Where the store is, or why it is read-only and what to do."""


class StateStore(Protocol):
    """The controller's state: revisions, deployments, nodes, assignment, events, settings,
    credentials.

    Every write is atomic: it happens whole or not at all (`save_assignment` and
    `revoke_certificates` on etcd: whole for each node or certificate, see there).
    Leader-only writes (`save_assignment`, `raise_generation_floor`,
    `number_routes`, `mark_drained`, `forget_node`, `begin_term`) raise `NotLeader`
    once `fence` was called with a term that is no longer current. A store that
    cannot be reached raises `StoreUnavailable` on writes and keeps serving reads
    from what it last saw.
    """

    @property
    def controller_id(self) -> str:
        """This controller's id, kept in its data folder."""
        ...

    @property
    def cluster_name(self) -> str:
        """The cluster the store belongs to."""
        ...

    def close(self) -> None:
        """Release the store; safe to call twice."""
        ...

    def health(self) -> StoreHealth:
        """Whether writes can be taken now."""
        ...

    def fence(self, term: int) -> None:
        """From now on, leader-only writes succeed only while `term` is the current term."""
        ...

    def unfence(self) -> None:
        """Leader-only writes no longer check the term."""
        ...

    def on_change(self, callback: Callable[[set[str]], None]) -> None:
        """Call `callback` with the areas (`ChangeArea`) of every later change.

        Leader terms and controller registrations belong to no area: they are read
        when needed and never reported.
        """
        ...

    # Leader terms and the cluster's controllers

    def begin_term(self, floor: int = 0) -> int:
        """Set the leader term counter to one above both itself and `floor`; return it.

        The term is what nodes follow: `floor` is the highest term a node reports,
        so a store restored from a backup still hands out a term above it. On etcd
        only the fenced leader takes a term (`NotLeader` otherwise).
        """
        ...

    def current_term(self) -> int:
        """The term the last leader took (0: none yet)."""
        ...

    def register_member(self, controller_id: str, address: str, role: str) -> None:
        """Record that a controller runs now (every few seconds): its API's address and
        its role (`leader`, `standby` or `single`). Any controller may write it."""
        ...

    def members(self, within_s: float = 30.0) -> list[MemberRow]:
        """The controllers registered in the last `within_s` seconds, by id."""
        ...

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
        ...

    def current(self) -> list[Revision]:
        """The current revision of each deployment that is not deleted, by name."""
        ...

    def revision(self, deployment: str, number: int) -> Revision | None:
        """One revision of a deployment, or None."""
        ...

    def revisions(self, deployment: str) -> list[Revision]:
        """Every revision of a deployment, newest first."""
        ...

    def deployments(self) -> list[DeploymentRow]:
        """Every deployment ever applied, deleted ones included, by name."""
        ...

    def delete_deployment(self, name: str) -> bool:
        """Mark a deployment deleted (its revisions stay); False if unknown or deleted."""
        ...

    # Assignment and routing table

    def assignment(self) -> dict[str, NodeAssignment]:
        """What each node should run, by node id."""
        ...

    def save_assignment(
        self, changed: Mapping[str, str], *, force: Collection[str] = ()
    ) -> dict[str, int]:
        """Save nodes' desired state; each changed (or forced) node gets a new generation."""
        ...

    def last_generation(self) -> int:
        """The highest generation handed out or raised to (0 on a new store)."""
        ...

    def raise_generation_floor(self, floor: int) -> int:
        """Make the generation counter at least `floor`; return its value."""
        ...

    def routes_generation(self) -> int:
        """The generation of the last routing table made (0: none yet)."""
        ...

    def number_routes(self, content_key: str, *, floor: int = 0) -> int:
        """The generation of a routing table with this content (see `SqliteStore`)."""
        ...

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
        ...

    def nodes(self) -> list[NodeRow]:
        """Every known node, by id."""
        ...

    def forget_node(self, node_id: str) -> bool:
        """Remove a node and its assignment; False if neither was known."""
        ...

    def mark_node(self, node_id: str, mark: Mark, *, reason: str = "") -> NodeMarkRow:
        """Cordon a node or drain it (replacing an earlier mark)."""
        ...

    def mark_drained(self, node_id: str) -> NodeMarkRow | None:
        """Note that a draining node is empty; None when it is not draining."""
        ...

    def unmark_node(self, node_id: str) -> bool:
        """Uncordon a node; False when it was neither cordoned nor draining."""
        ...

    def node_marks(self) -> dict[str, NodeMarkRow]:
        """Every cordoned or draining node, by id."""
        ...

    # Events and settings

    def add_event(
        self,
        *,
        severity: Severity,
        reason: str,
        object: str,
        node_id: str = "",
        message: str,
    ) -> EventRow:
        """Append an event; the oldest are trimmed beyond the store's limit."""
        ...

    def events(
        self, after_id: int = 0, limit: int | None = None, object: str | None = None
    ) -> list[EventRow]:
        """Events after `after_id`, oldest first; with `limit`, only the newest `limit`."""
        ...

    def get_setting(self, key: str) -> str | None:
        """A setting's value, or None."""
        ...

    def set_setting(self, key: str, value: str) -> None:
        """Set (or replace) a setting."""
        ...

    def set_setting_if_absent(self, key: str, value: str) -> str:
        """Set a setting unless it has a value; return the value in force."""
        ...

    # Credentials and certificates

    def add_credential(
        self,
        kind: CredentialKind,
        credential_id: str,
        *,
        secret_sha256: str,
        description: str,
        expires_at: float | None,
    ) -> CredentialRow:
        """Record a join token or API key by the SHA-256 of its secret."""
        ...

    def credential(self, kind: CredentialKind, credential_id: str) -> CredentialRow | None:
        """One join token or API key, or None."""
        ...

    def credentials(self, kind: CredentialKind) -> list[CredentialRow]:
        """Every join token or every API key, oldest first."""
        ...

    def revoke_credential(self, kind: CredentialKind, credential_id: str) -> bool:
        """Revoke a join token or API key; False when unknown or revoked already."""
        ...

    def mark_credential_used(self, kind: CredentialKind, credential_id: str) -> None:
        """Note that a credential was just used."""
        ...

    def add_certificate(self, serial: int, node_id: str, not_after: float) -> None:
        """Record a certificate the cluster CA issued to a node or to `admin/NAME`."""
        ...

    def certificate_revoked(self, serial: int) -> bool | None:
        """Whether an issued certificate is revoked (None: never issued here)."""
        ...

    def revoke_certificates(self, owner: str) -> int:
        """Revoke every certificate recorded for `owner`; returns how many were revoked."""
        ...

    def certificates(self, owner_prefix: str) -> list[CertificateRow]:
        """Every certificate whose owner starts with `owner_prefix`, oldest first."""
        ...

    def revoke_node(self, node_id: str, reason: str) -> int:
        """Revoke a node and its certificates; returns how many certificates."""
        ...

    def live_certificate_until(self, node_id: str) -> float | None:
        """When the node's latest valid certificate expires (None: it holds none)."""
        ...

    def revoked_nodes(self) -> dict[str, str]:
        """Revoked node id → reason."""
        ...
