"""Where each piece of the controller's state lives in etcd, under `/edgefleet/<cluster>/`.

Names (deployments, nodes, settings, credential ids) are percent-encoded into one
key segment, so a name holding `/` can never reach into another name's keys.
Numbers are zero-padded so that etcd's key order is their numeric order.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from orchestrator.store.changes import ChangeArea

ROOT = b"/edgefleet/"

_AREAS: tuple[tuple[bytes, ChangeArea], ...] = (
    (b"revisions/", "revisions"),
    (b"deployments/", "revisions"),
    (b"assignment/", "assignment"),
    (b"counters/generation", "assignment"),
    (b"routes", "routes"),
    (b"nodes/", "nodes"),
    (b"marks/", "marks"),
    (b"events/", "events"),
    (b"counters/events", "events"),
    (b"settings/", "settings"),
    (b"credentials/", "credentials"),
    (b"certificates/", "credentials"),
    (b"revoked/", "credentials"),
)


def segment(name: str) -> bytes:
    """`name` as one key segment (no `/` left in it)."""
    return quote(name, safe="").encode()


def name_of(key: bytes) -> str:
    """The name in the last segment of `key`."""
    return unquote(key.rsplit(b"/", 1)[-1].decode())


class ClusterKeys:
    """Every key of one cluster's state."""

    def __init__(self, cluster: str) -> None:
        if not cluster:
            raise ValueError("cluster_name must not be empty")
        self.prefix = ROOT + segment(cluster) + b"/"

    @property
    def meta(self) -> bytes:
        """The cluster's name and the layout version of its keys."""
        return self.prefix + b"meta"

    @property
    def leader(self) -> bytes:
        """The leader key: held on the leader's lease; its create_revision is the term."""
        return self.prefix + b"leader"

    @property
    def generation(self) -> bytes:
        """The counter every assignment generation is drawn from."""
        return self.prefix + b"counters/generation"

    @property
    def term(self) -> bytes:
        """The leader term counter: the term the last leader took (what nodes follow)."""
        return self.prefix + b"counters/term"

    @property
    def event_counter(self) -> bytes:
        """The id of the last event appended."""
        return self.prefix + b"counters/events"

    @property
    def routes(self) -> bytes:
        """The last routing table's generation and content key."""
        return self.prefix + b"routes"

    def deployment(self, name: str = "") -> bytes:
        """One deployment's record (without a name: the prefix of all of them)."""
        return self.prefix + b"deployments/" + segment(name)

    def revision(self, deployment: str, number: int | None = None) -> bytes:
        """One revision (without a number: the prefix of the deployment's revisions)."""
        key = self.prefix + b"revisions/" + segment(deployment) + b"/"
        return key if number is None else key + b"%010d" % number

    def assignment(self, node_id: str = "") -> bytes:
        """A node's saved desired state (without an id: the prefix)."""
        return self.prefix + b"assignment/" + segment(node_id)

    def node(self, node_id: str = "") -> bytes:
        """A known node (without an id: the prefix)."""
        return self.prefix + b"nodes/" + segment(node_id)

    def mark(self, node_id: str = "") -> bytes:
        """A cordoned or draining node (without an id: the prefix)."""
        return self.prefix + b"marks/" + segment(node_id)

    def event(self, event_id: int | None = None) -> bytes:
        """One event (without an id: the prefix)."""
        key = self.prefix + b"events/"
        return key if event_id is None else key + b"%020d" % event_id

    def setting(self, key: str) -> bytes:
        """One setting."""
        return self.prefix + b"settings/" + segment(key)

    def credential(self, kind: str, credential_id: str = "") -> bytes:
        """A join token or API key (without an id: the prefix of that kind)."""
        return self.prefix + b"credentials/" + segment(kind) + b"/" + segment(credential_id)

    def certificate(self, serial: int | None = None) -> bytes:
        """A certificate the cluster CA issued (without a serial: the prefix)."""
        key = self.prefix + b"certificates/"
        return key if serial is None else key + format(serial, "x").encode()

    def revoked(self, node_id: str = "") -> bytes:
        """A revoked node (without an id: the prefix)."""
        return self.prefix + b"revoked/" + segment(node_id)

    def member(self, controller_id: str = "") -> bytes:
        """A controller's registration (without an id: the prefix)."""
        return self.prefix + b"members/" + segment(controller_id)

    def within(self, key: bytes) -> bytes:
        """`key` relative to the cluster's prefix (what `PrefixMirror.items` takes)."""
        if not key.startswith(self.prefix):
            raise ValueError(f"{key!r} is not under {self.prefix!r}")
        return key[len(self.prefix) :]

    def area(self, key: bytes) -> ChangeArea | None:
        """The area a key belongs to (None: the meta, leader, term and member keys, which
        the controller reads when it needs them and does not act on)."""
        if not key.startswith(self.prefix):
            return None
        rest = key[len(self.prefix) :]
        for start, area in _AREAS:
            if rest.startswith(start):
                return area
        return None
