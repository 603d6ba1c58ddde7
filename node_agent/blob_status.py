"""The node's blobs and a model's download, as the node's status reports them."""

from __future__ import annotations

from typing import Any

from edgefleet.v1 import common_pb2, node_pb2
from edgefleet_contract.wire import timestamp
from node_agent.blobs import BlobStore
from node_agent.model_delivery import Delivery


def blob_statuses(store: BlobStore) -> list[node_pb2.BlobHeld]:
    """Every blob the store holds, complete ones first, then partial downloads."""
    return [
        node_pb2.BlobHeld(
            sha256=info.sha256,
            size_bytes=info.size,
            complete=info.complete,
            bytes_done=info.bytes_done,
            last_used=timestamp(info.last_used.timestamp()),
        )
        for info in store.held()
    ]


def delivery_fields(delivery: Delivery) -> dict[str, Any]:
    """ModelStatus fields about a model's blob: `download` while bytes move, `sha256` and
    `size_bytes` once known."""
    fields: dict[str, Any] = {"sha256": delivery.sha256, "size_bytes": delivery.size_bytes}
    report = delivery.download
    if report is not None:
        fields["download"] = common_pb2.DownloadProgress(
            bytes_done=report.bytes_done,
            bytes_total=report.bytes_total,
            rate_bps=report.rate_bps,
            eta_s=report.eta_s,
            source=report.source,
        )
    return fields
