"""A node's health from what its status stream did, as a pure function of time.

`ready` while status arrives; `suspect` from the moment the stream breaks (a
dead process is seen within milliseconds, a cut cable within ~1.5 s thanks to
keepalive); `not-ready` once nothing arrived for the failure timeout. mDNS is
never consulted: a crash is invisible there for many minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
