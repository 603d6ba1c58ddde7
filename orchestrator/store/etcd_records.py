"""The controller's records as etcd values: compact JSON objects, one per key.

Each decoder checks what it reads, so a value written by a newer EdgeFleet or by
hand fails with a `StoreError` naming the key instead of a stray `KeyError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, TypeVar, cast

from orchestrator.store.assignment import NodeAssignment
from orchestrator.store.credentials import CertificateRow, CredentialKind, CredentialRow
from orchestrator.store.errors import StoreError
from orchestrator.store.events import EventRow, Severity
from orchestrator.store.members import MemberRow
from orchestrator.store.node_marks import Mark, NodeMarkRow
from orchestrator.store.nodes import DiscoveredBy, NodeRow
from orchestrator.store.revisions import DeploymentRow, Revision

T = TypeVar("T")

FORMAT = 1
"""The layout of the keys and values; kept in the cluster's meta key."""


def dump(record: dict[str, Any]) -> bytes:
    """A record as a value."""
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def load(key: bytes, value: bytes, decode: Callable[[dict[str, Any]], T]) -> T:
    """The record in `value` (stored at `key`), through `decode`."""
    try:
        record = json.loads(value)
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        return decode(record)
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(
            f"the etcd key {key.decode(errors='replace')} holds a value this EdgeFleet "
            f"cannot read ({exc!r}); was it written by a newer EdgeFleet or by hand?"
        ) from exc


def meta(cluster_name: str) -> dict[str, Any]:
    """The cluster's meta record."""
    return {"cluster_name": cluster_name, "format": FORMAT}


def meta_of(r: dict[str, Any]) -> tuple[str, int]:
    """(cluster name, key layout) from the meta record."""
    return str(r["cluster_name"]), int(r["format"])


def counter(value: int) -> bytes:
    """A counter's value."""
    return dump({"value": value})


def counter_of(record: dict[str, Any]) -> int:
    """The counter in a stored record."""
    return int(record["value"])


def routes(generation: int, content_key: str) -> bytes:
    """The routing table's generation and the content it numbered."""
    return dump({"generation": generation, "content_key": content_key})


def routes_of(record: dict[str, Any]) -> tuple[int, str]:
    """The routes in a stored record."""
    return int(record["generation"]), str(record["content_key"])


def revision(row: Revision) -> bytes:
    """A revision as a value."""
    return dump(
        {
            "deployment": row.deployment,
            "number": row.number,
            "applied_at": row.applied_at,
            "source": row.source,
            "manifest": row.manifest,
            "desired_json": row.desired_json,
            "digest": row.digest,
            "cause": row.cause,
        }
    )


def revision_of(r: dict[str, Any]) -> Revision:
    """The revision in a stored record."""
    return Revision(
        deployment=str(r["deployment"]),
        number=int(r["number"]),
        applied_at=float(r["applied_at"]),
        source=str(r["source"]),
        manifest=str(r["manifest"]),
        desired_json=str(r["desired_json"]),
        digest=str(r["digest"]),
        cause=str(r["cause"]),
    )


def deployment(row: DeploymentRow) -> bytes:
    """A deployment as a value."""
    return dump(
        {
            "name": row.name,
            "current_revision": row.current_revision,
            "deleted": row.deleted,
            "updated_at": row.updated_at,
        }
    )


def deployment_of(r: dict[str, Any]) -> DeploymentRow:
    """The deployment in a stored record."""
    return DeploymentRow(
        name=str(r["name"]),
        current_revision=int(r["current_revision"]),
        deleted=bool(r["deleted"]),
        updated_at=float(r["updated_at"]),
    )


def assignment(row: NodeAssignment) -> bytes:
    """An assignment as a value."""
    return dump(
        {
            "node_id": row.node_id,
            "generation": row.generation,
            "desired_json": row.desired_json,
            "updated_at": row.updated_at,
        }
    )


def assignment_of(r: dict[str, Any]) -> NodeAssignment:
    """The assignment in a stored record."""
    return NodeAssignment(
        node_id=str(r["node_id"]),
        generation=int(r["generation"]),
        desired_json=str(r["desired_json"]),
        updated_at=float(r["updated_at"]),
    )


def node(row: NodeRow) -> bytes:
    """A node as a value."""
    return dump(
        {
            "node_id": row.node_id,
            "address": row.address,
            "discovered_by": row.discovered_by,
            "labels": dict(sorted(row.labels.items())),
            "first_seen": row.first_seen,
            "last_seen": row.last_seen,
        }
    )


def node_of(r: dict[str, Any]) -> NodeRow:
    """The node in a stored record."""
    labels = {str(k): str(v) for k, v in dict(r["labels"]).items()}
    return NodeRow(
        node_id=str(r["node_id"]),
        address=str(r["address"]),
        discovered_by=cast(DiscoveredBy, str(r["discovered_by"])),
        labels=MappingProxyType(labels),
        first_seen=float(r["first_seen"]),
        last_seen=float(r["last_seen"]),
    )


def mark(row: NodeMarkRow) -> bytes:
    """A mark as a value."""
    return dump(
        {
            "node_id": row.node_id,
            "mark": row.mark,
            "reason": row.reason,
            "since": row.since,
            "drained_at": row.drained_at,
        }
    )


def mark_of(r: dict[str, Any]) -> NodeMarkRow:
    """The mark in a stored record."""
    return NodeMarkRow(
        node_id=str(r["node_id"]),
        mark=cast(Mark, str(r["mark"])),
        reason=str(r["reason"]),
        since=float(r["since"]),
        drained_at=_optional_float(r["drained_at"]),
    )


def event(row: EventRow) -> bytes:
    """An event as a value."""
    return dump(
        {
            "id": row.id,
            "time": row.time,
            "severity": row.severity,
            "reason": row.reason,
            "object": row.object,
            "node_id": row.node_id,
            "message": row.message,
        }
    )


def event_of(r: dict[str, Any]) -> EventRow:
    """The event in a stored record."""
    return EventRow(
        id=int(r["id"]),
        time=float(r["time"]),
        severity=cast(Severity, str(r["severity"])),
        reason=str(r["reason"]),
        object=str(r["object"]),
        node_id=str(r["node_id"]),
        message=str(r["message"]),
    )


def setting(value: str) -> bytes:
    """A setting as a value."""
    return dump({"value": value})


def setting_of(r: dict[str, Any]) -> str:
    """The setting in a stored record."""
    return str(r["value"])


def credential(row: CredentialRow) -> bytes:
    """A credential as a value."""
    return dump(
        {
            "kind": row.kind,
            "id": row.id,
            "secret_sha256": row.secret_sha256,
            "description": row.description,
            "created_at": row.created_at,
            "expires_at": row.expires_at,
            "revoked_at": row.revoked_at,
            "last_used_at": row.last_used_at,
        }
    )


def credential_of(r: dict[str, Any]) -> CredentialRow:
    """The credential in a stored record."""
    return CredentialRow(
        kind=cast(CredentialKind, str(r["kind"])),
        id=str(r["id"]),
        secret_sha256=str(r["secret_sha256"]),
        description=str(r["description"]),
        created_at=float(r["created_at"]),
        expires_at=_optional_float(r["expires_at"]),
        revoked_at=_optional_float(r["revoked_at"]),
        last_used_at=_optional_float(r["last_used_at"]),
    )


def certificate(row: CertificateRow) -> bytes:
    """A certificate as a value."""
    return dump(
        {
            "serial": format(row.serial, "x"),
            "owner": row.owner,
            "issued_at": row.issued_at,
            "not_after": row.not_after,
            "revoked_at": row.revoked_at,
        }
    )


def certificate_of(r: dict[str, Any]) -> CertificateRow:
    """The certificate in a stored record."""
    return CertificateRow(
        serial=int(str(r["serial"]), 16),
        owner=str(r["owner"]),
        issued_at=float(r["issued_at"]),
        not_after=float(r["not_after"]),
        revoked_at=_optional_float(r["revoked_at"]),
    )


def revoked_node(reason: str, revoked_at: float) -> bytes:
    """A revoked node as a value."""
    return dump({"reason": reason, "revoked_at": revoked_at})


def revoked_reason_of(r: dict[str, Any]) -> str:
    """The revoked reason in a stored record."""
    return str(r["reason"])


def member(row: MemberRow) -> bytes:
    """A controller's registration as a value."""
    return dump(
        {
            "controller_id": row.controller_id,
            "address": row.address,
            "role": row.role,
            "seen_at": row.seen_at,
        }
    )


def member_of(r: dict[str, Any]) -> MemberRow:
    """The controller registration in a stored record."""
    return MemberRow(
        controller_id=str(r["controller_id"]),
        address=str(r["address"]),
        role=str(r["role"]),
        seen_at=float(r["seen_at"]),
    )


def _optional_float(value: object) -> float | None:
    return None if value is None else float(cast(float, value))
