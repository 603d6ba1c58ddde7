"""Who each node should fetch each model blob from (pure).

Holders first (they have the whole blob), those of the node's own site (its `site`
label; nodes without one count as one site) before the others, then nodes fetching it
now. For a blob nobody holds, the first node (by id) assigned it in each site goes to
the origin; the other nodes of that site get it as their first peer, so a site's uplink
carries the bytes once. Only nodes that are ready and trusted, with a valid id and
address, are ever named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice

from edgefleet_common.pki import valid_node_id
from edgefleet_contract.desired import BlobPeer, ModelWant, NodeDesired, check_address
from edgefleet_contract.model_source import is_remote

MAX_PEERS = 8
"""Peers named per model: enough to replace a few that fail mid-transfer."""

Peers = dict[str, dict[str, tuple[BlobPeer, ...]]]
"""Node id -> model alias -> its peers, nearest first."""


@dataclass(frozen=True, slots=True)
class PeerNode:
    """A node as a source of blobs for the others."""

    id: str
    address: str
    site: str = ""
    usable: bool = True
    """Ready and trusted: it may be named as a peer."""
    complete: frozenset[str] = frozenset()
    """Blob keys (see `blob_key`) it holds whole."""
    fetching: frozenset[str] = frozenset()
    """Blob keys it is downloading now."""


def blob_key(want: ModelWant) -> str | None:
    """What names a model's blob across the fleet: its sha256 when known, else its source;
    None for a model whose source is on the node (nothing to fetch from peers)."""
    if not is_remote(want.source):
        return None
    return want.sha256 or f"source:{want.source}"


def can_serve(node: PeerNode) -> bool:
    """Whether the node may be named as a peer."""
    if not node.usable or not valid_node_id(node.id):
        return False
    try:
        check_address(node.address)
    except ValueError:
        return False
    return True


def plan_peers(assignment: Mapping[str, NodeDesired], nodes: Mapping[str, PeerNode]) -> Peers:
    """The peers of every remote model of every node in the assignment."""
    serving = {i: n for i, n in sorted(nodes.items()) if can_serve(n)}
    assigned: dict[str, list[str]] = {}
    for node, desired in sorted(assignment.items()):
        for want in desired.models:
            key = blob_key(want)
            if key is not None:
                assigned.setdefault(key, []).append(node)
    holders = _Index(key for n in serving.values() for key in n.complete)
    fetchers = _Index(key for n in serving.values() for key in n.fetching - n.complete)
    for n in serving.values():
        holders.add(n, n.complete)
        fetchers.add(n, n.fetching - n.complete)
    peers: Peers = {}
    for node, desired in sorted(assignment.items()):
        site = nodes[node].site if node in nodes else ""
        for want in desired.models:
            key = blob_key(want)
            if key is None:
                continue
            whole = holders.nearest(key, node, site)
            if whole:
                partial = fetchers.nearest(key, node, site, MAX_PEERS - len(whole))
            else:
                first = next(
                    (n for n in assigned[key] if _goes_first(n, node, site, serving)), None
                )
                if first is None or first == node:
                    continue  # this node goes to the origin for its site
                partial = [serving[first]]
                partial += [n for n in fetchers.nearest(key, node, site) if n.id != first]
            found = [BlobPeer(node_id=n.id, address=n.address, complete=True) for n in whole]
            found += [BlobPeer(node_id=n.id, address=n.address, complete=False) for n in partial]
            peers.setdefault(node, {})[want.alias] = tuple(found[:MAX_PEERS])
    return peers


class _Index:
    """Nodes by blob key, by site and in all, each list by node id."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._sites: dict[str, dict[str, list[PeerNode]]] = {key: {} for key in keys}
        self._all: dict[str, list[PeerNode]] = {key: [] for key in self._sites}

    def add(self, node: PeerNode, keys: Iterable[str]) -> None:
        for key in keys:
            self._sites[key].setdefault(node.site, []).append(node)
            self._all[key].append(node)

    def nearest(self, key: str, node: str, site: str, limit: int = MAX_PEERS) -> list[PeerNode]:
        """Up to `limit` nodes for the key other than `node`: its site's first."""
        near = self._sites.get(key, {}).get(site, [])
        found = list(islice((n for n in near if n.id != node), limit))
        for other in self._all.get(key, []):
            if len(found) >= limit:
                break
            if other.site != site:
                found.append(other)
        return found


def _goes_first(candidate: str, node: str, site: str, serving: Mapping[str, PeerNode]) -> bool:
    """Whether the candidate may be its site's origin fetcher, as far as `node` knows: the
    node itself, or a node of its site that can serve."""
    return candidate == node or (candidate in serving and serving[candidate].site == site)


def with_peers(desired: NodeDesired, peers: Mapping[str, tuple[BlobPeer, ...]]) -> NodeDesired:
    """The desired state with each model's peers as given (none for the others)."""
    models = tuple(m.model_copy(update={"peers": peers.get(m.alias, ())}) for m in desired.models)
    if models == desired.models:
        return desired
    return desired.model_copy(update={"models": models})
