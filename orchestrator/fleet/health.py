"""A node's health from what its status stream did, as a pure function of time.

`ready` while status arrives; `suspect` from the moment the stream breaks (a
dead process is seen within milliseconds, a cut cable within ~1.5 s thanks to
keepalive); `not-ready` once nothing arrived for the failure timeout. mDNS is
never consulted: a crash is invisible there for many minutes. An operator's mark
(cordoned, draining) combines with health in `node_state`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from orchestrator.scheduler.model import NodeState
from orchestrator.store import Mark

Health = Literal["ready", "suspect", "not-ready", "untrusted"]


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """What the controller knows of a node's stream at one moment (monotonic seconds)."""

    connected: bool
    """A status stream is open and has delivered its first message."""
    last_heard: float | None
    """When the last status message arrived; None if never."""
    now: float
    failure_timeout: float


def assess(inputs: HealthInputs) -> Health:
    """The node's health at `inputs.now`."""
    if inputs.last_heard is None:
        return "not-ready"
    silent = inputs.now - inputs.last_heard
    if silent > inputs.failure_timeout:
        return "not-ready"
    return "ready" if inputs.connected else "suspect"


def node_state(health: Health, mark: Mark | None) -> NodeState:
    """The state a node is shown and scheduled with: its health and its operator's mark.

    A mark is never lost to health, nor health to a mark: a draining node is `draining`
    while it is `ready`; should it break (`suspect`, `not-ready`) or fail to prove
    itself (`untrusted`), that state shows and its failure rules apply (with automatic
    failover its work fails over as any failed node's; otherwise it stays), and it
    stays marked, so that the drain resumes when it is back. A cordoned node keeps its
    health as its state (the mark is shown beside it); either mark keeps new work away.
    """
    return "draining" if mark == "draining" and health == "ready" else health
