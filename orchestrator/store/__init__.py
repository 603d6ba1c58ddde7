"""The controller's state store: one SQLite file in its data folder, or an etcd cluster.

It keeps every applied manifest revision, the deployments, the known nodes
(and which are cordoned or draining), what each node should run (numbered by
generation), settings, credentials and the event log. Each call is one
transaction, so a killed controller restarts consistent. `StateStore` is what
the controller needs; `SqliteStore` and `EtcdStore` provide it.
"""

from orchestrator.store.assignment import NodeAssignment
from orchestrator.store.changes import ChangeArea
from orchestrator.store.credentials import CertificateRow
from orchestrator.store.database import SCHEMA_VERSION, Synchronous
from orchestrator.store.errors import NotLeader, StoreError, StoreUnavailable
from orchestrator.store.events import DEFAULT_MAX_EVENTS, EventRow, Severity
from orchestrator.store.members import MemberRow
from orchestrator.store.node_marks import Mark, NodeMarkRow
from orchestrator.store.nodes import DiscoveredBy, NodeRow
from orchestrator.store.revisions import DeploymentRow, Revision
from orchestrator.store.sqlite_store import SqliteStore
from orchestrator.store.state_store import StateStore, StoreHealth

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "SCHEMA_VERSION",
    "CertificateRow",
    "ChangeArea",
    "DeploymentRow",
    "DiscoveredBy",
    "EventRow",
    "Mark",
    "MemberRow",
    "NodeAssignment",
    "NodeMarkRow",
    "NodeRow",
    "NotLeader",
    "Revision",
    "Severity",
    "SqliteStore",
    "StateStore",
    "StoreError",
    "StoreHealth",
    "StoreUnavailable",
    "Synchronous",
]
