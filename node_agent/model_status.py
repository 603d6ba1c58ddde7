"""One model's line in the node's status: its state, load, capacity and delivery."""

from __future__ import annotations

import time

from edgefleet.v1 import common_pb2
from edgefleet_contract.wire import MODEL_STATES, timestamp
from node_agent.admission import TargetLoad
from node_agent.blob_status import delivery_fields
from node_agent.model_capacity import Capacity
from node_agent.model_slot import ModelSlot


def model_status(
    slot: ModelSlot, load: TargetLoad | None, capacity: Capacity | None
) -> common_pb2.ModelStatus:
    """A wanted model as the node reports it; queue depth counts what waits inside the
    runtime too: that is where the balancers see work a replica has not started."""
    return common_pb2.ModelStatus(
        alias=slot.want.alias,
        state=MODEL_STATES[slot.state],
        reason=slot.reason,
        progress=slot.progress,
        memory_bytes=slot.memory_bytes,
        runtime=slot.runtime,
        in_flight=load.in_flight if load else 0,
        queue_depth=(load.waiting if load else 0) + (capacity.queued if capacity else 0),
        last_used=timestamp(time.time() - (time.monotonic() - slot.last_used)),
        capacity=capacity.proto() if capacity else None,
        **delivery_fields(slot.delivery),
    )
