"""What goes wrong talking to etcd: no answer, history gone, or a refused request."""

from __future__ import annotations

from orchestrator.errors import EdgeFleetError


class EtcdError(EdgeFleetError):
    """etcd answered but refused the request (bad argument, permission, space quota)."""


class EtcdUnavailable(EtcdError):
    """No member answered in time, or none had a leader (quorum lost); retrying may help."""


class EtcdCompacted(EtcdError):
    """A watch asked for history that etcd has compacted away; read everything again."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision
