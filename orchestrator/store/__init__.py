"""The controller's state store: one SQLite file in its data folder.

It keeps every applied manifest revision, the deployments, the known nodes
(and which are cordoned or draining), what each node should run (numbered by
generation), settings and the event log. Each call is one transaction, so a
killed controller restarts consistent.
"""

from orchestrator.store.assignment import NodeAssignment
from orchestrator.store.database import SCHEMA_VERSION, StoreError, Synchronous
from orchestrator.store.events import DEFAULT_MAX_EVENTS, EventRow, Severity
from orchestrator.store.node_marks import Mark, NodeMarkRow
from orchestrator.store.nodes import DiscoveredBy, NodeRow
from orchestrator.store.revisions import DeploymentRow, Revision
from orchestrator.store.sqlite_store import SqliteStore
from orchestrator.store.state_store import StateStore

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "SCHEMA_VERSION",
    "DeploymentRow",
    "DiscoveredBy",
    "EventRow",
    "Mark",
    "NodeAssignment",
    "NodeMarkRow",
    "NodeRow",
    "Revision",
    "Severity",
    "SqliteStore",
    "StateStore",
    "StoreError",
    "Synchronous",
]
