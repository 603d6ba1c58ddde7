"""The decisions behind each write of the controller's state to etcd, one function each.

Each reads what it needs from a `Snapshot` and returns a `Decision`: the puts
and deletes of one transaction and the caller's result. Keys guarded by another
key are read with `peek`: every write to a deployment's revisions also writes
the deployment, every write to the assignment also writes the generation
counter, and every new event also writes the event counter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType

from orchestrator.etcd.txn import Op
from orchestrator.store import etcd_records as records
from orchestrator.store.assignment import NodeAssignment
from orchestrator.store.etcd_keys import ClusterKeys
from orchestrator.store.etcd_writer import MAX_KEYS_PER_TXN, Decision, Snapshot
from orchestrator.store.events import EventRow, Severity, check_event
from orchestrator.store.members import MemberRow, check_member
from orchestrator.store.node_marks import Mark, NodeMarkRow, check_mark
from orchestrator.store.nodes import DiscoveredBy, NodeRow, check_node
from orchestrator.store.revisions import DeploymentRow, Revision, check_deployment_name
from orchestrator.store.settings import check_key
from orchestrator.store.terms import check_floor

TRIM_AT_ONCE = 100
"""Old events deleted by one `add_event` at most (etcd caps the operations of a txn)."""


def add_revision(
    s: Snapshot,
    keys: ClusterKeys,
    deployment: str,
    *,
    source: str,
    manifest: str,
    desired_json: str,
    digest: str,
    cause: str,
    now: float,
) -> Decision[Revision]:
    """The next revision of `deployment`, made current and undeleted."""
    check_deployment_name(deployment)
    known = s.get(keys.deployment(deployment), records.deployment_of)
    number = known.current_revision + 1 if known else 1
    made = Revision(deployment, number, now, source, manifest, desired_json, digest, cause)
    row = DeploymentRow(deployment, number, deleted=False, updated_at=now)
    ops = [
        Op.put(keys.revision(deployment, number), records.revision(made)),
        Op.put(keys.deployment(deployment), records.deployment(row)),
    ]
    return Decision(made, ops)


def delete_deployment(s: Snapshot, keys: ClusterKeys, name: str, now: float) -> Decision[bool]:
    """Mark a deployment deleted; False when unknown or deleted already."""
    known = s.get(keys.deployment(name), records.deployment_of)
    if known is None or known.deleted:
        return Decision(False)
    row = DeploymentRow(name, known.current_revision, deleted=True, updated_at=now)
    return Decision(True, [Op.put(keys.deployment(name), records.deployment(row))])


def save_assignment(
    s: Snapshot,
    keys: ClusterKeys,
    changed: Mapping[str, str],
    forced: Collection[str],
    now: float,
    done: Collection[str],
) -> Decision[dict[str, int]]:
    """The next part of a batch: new generations, from the one counter, for the first
    changed or forced nodes not `done`, with the counter at most `MAX_KEYS_PER_TXN` keys."""
    counter = s.get(keys.generation, records.counter_of) or 0
    saved: dict[str, int] = {}
    ops: list[Op] = []
    # Sorted: the same batch always numbers its nodes in the same order.
    for node_id in sorted(changed):
        if len(saved) == MAX_KEYS_PER_TXN - 1:
            break
        if node_id in done:
            continue
        desired_json = changed[node_id]
        held = s.peek(keys.assignment(node_id), records.assignment_of)
        if held is not None and held.desired_json == desired_json and node_id not in forced:
            continue
        counter += 1
        row = NodeAssignment(node_id, counter, desired_json, now)
        ops.append(Op.put(keys.assignment(node_id), records.assignment(row)))
        saved[node_id] = counter
    if saved:
        ops.append(Op.put(keys.generation, records.counter(counter)))
    return Decision(saved, ops)


def raise_generation_floor(s: Snapshot, keys: ClusterKeys, floor: int) -> Decision[int]:
    """Lift the generation counter to `floor` (never lower it)."""
    counter = s.get(keys.generation, records.counter_of) or 0
    if counter >= floor:
        return Decision(counter)
    return Decision(floor, [Op.put(keys.generation, records.counter(floor))])


def begin_term(s: Snapshot, keys: ClusterKeys, floor: int) -> Decision[int]:
    """Set the term counter one above both itself and `floor`."""
    check_floor(floor)
    term = max(s.get(keys.term, records.counter_of) or 0, floor) + 1
    return Decision(term, [Op.put(keys.term, records.counter(term))])


def register_member(keys: ClusterKeys, row: MemberRow) -> Decision[None]:
    """Record a controller's registration (a blind write: only that controller writes it)."""
    check_member(row.controller_id)
    return Decision(None, [Op.put(keys.member(row.controller_id), records.member(row))])


def number_routes(s: Snapshot, keys: ClusterKeys, content_key: str, floor: int) -> Decision[int]:
    """The same generation for the same content, else one above the last and `floor`."""
    generation, stored = s.get(keys.routes, records.routes_of) or (0, "")
    if stored == content_key and generation >= floor:
        return Decision(generation)
    generation = max(generation, floor) + 1
    return Decision(generation, [Op.put(keys.routes, records.routes(generation, content_key))])


def upsert_node(
    s: Snapshot,
    keys: ClusterKeys,
    node_id: str,
    *,
    address: str,
    discovered_by: DiscoveredBy,
    labels: Mapping[str, str],
    last_seen: float,
) -> Decision[NodeRow]:
    """Record a node, keeping its first sighting."""
    check_node(node_id, discovered_by)
    known = s.get(keys.node(node_id), records.node_of)
    row = NodeRow(
        node_id=node_id,
        address=address,
        discovered_by=discovered_by,
        labels=MappingProxyType(dict(sorted(labels.items()))),
        first_seen=last_seen if known is None else known.first_seen,
        last_seen=last_seen,
    )
    return Decision(row, [Op.put(keys.node(node_id), records.node(row))])


def forget_node(s: Snapshot, keys: ClusterKeys, node_id: str) -> Decision[bool]:
    """Delete a node and its assignment; False when neither was known."""
    ops: list[Op] = []
    if s.get(keys.node(node_id), records.node_of) is not None:
        ops.append(Op.delete(keys.node(node_id)))
    counter = s.get(keys.generation, records.counter_of) or 0
    if s.peek(keys.assignment(node_id), records.assignment_of) is not None:
        ops.append(Op.delete(keys.assignment(node_id)))
        # Rewritten unchanged: every change to the assignment moves the counter's key.
        ops.append(Op.put(keys.generation, records.counter(counter)))
    return Decision(bool(ops), ops)


def mark_node(
    keys: ClusterKeys, node_id: str, mark: Mark, reason: str, now: float
) -> Decision[NodeMarkRow]:
    """Cordon or drain a node (a blind write: the last mark wins)."""
    check_mark(node_id, mark)
    row = NodeMarkRow(node_id, mark, reason, now)
    return Decision(row, [Op.put(keys.mark(node_id), records.mark(row))])


def mark_drained(
    s: Snapshot, keys: ClusterKeys, node_id: str, now: float
) -> Decision[NodeMarkRow | None]:
    """Note when a draining node was seen empty; None when it is not draining."""
    known = s.get(keys.mark(node_id), records.mark_of)
    if known is None or known.mark != "draining":
        return Decision(None)
    row = NodeMarkRow(node_id, known.mark, known.reason, known.since, now)
    return Decision(row, [Op.put(keys.mark(node_id), records.mark(row))])


def unmark_node(s: Snapshot, keys: ClusterKeys, node_id: str) -> Decision[bool]:
    """Lift a node's mark; False when it had none."""
    if s.get(keys.mark(node_id), records.mark_of) is None:
        return Decision(False)
    return Decision(True, [Op.delete(keys.mark(node_id))])


def add_event(
    s: Snapshot,
    keys: ClusterKeys,
    *,
    severity: Severity,
    reason: str,
    object: str,
    node_id: str,
    message: str,
    now: float,
    keep: int,
) -> Decision[EventRow]:
    """Append an event with the next id, trimming the oldest beyond `keep`."""
    check_event(severity, reason, keep)
    event_id = (s.get(keys.event_counter, records.counter_of) or 0) + 1
    row = EventRow(event_id, now, severity, reason, object, node_id, message)
    ops = [
        Op.put(keys.event(event_id), records.event(row)),
        Op.put(keys.event_counter, records.counter(event_id)),
    ]
    ops.extend(Op.delete(keys.event(old)) for old in _events_to_trim(s, keys, event_id - keep))
    return Decision(row, ops)


def _events_to_trim(s: Snapshot, keys: ClusterKeys, newest_gone: int) -> list[int]:
    """The ids of stored events up to `newest_gone`, oldest first, at most `TRIM_AT_ONCE`.

    Ids are appended in order and trimmed from the oldest, so the stored ones are
    a run: usually only `newest_gone` itself is left to delete.
    """
    if newest_gone < 1:
        return []
    if not s.present(keys.event(newest_gone - 1)):
        return [newest_gone] if s.present(keys.event(newest_gone)) else []
    prefix = keys.event()
    oldest = int(s.keys(prefix)[0][len(prefix) :])
    return list(range(oldest, min(newest_gone, oldest + TRIM_AT_ONCE - 1) + 1))


def set_setting(keys: ClusterKeys, key: str, value: str) -> Decision[None]:
    """Set or replace a setting (a blind write)."""
    check_key(key)
    return Decision(None, [Op.put(keys.setting(key), records.setting(value))])


def set_setting_if_absent(s: Snapshot, keys: ClusterKeys, key: str, value: str) -> Decision[str]:
    """Set a setting unless it has a value; the value in force."""
    check_key(key)
    stored = s.get(keys.setting(key), records.setting_of)
    if stored is not None:
        return Decision(stored)
    return Decision(value, [Op.put(keys.setting(key), records.setting(value))])
