"""The contract every agent tool implements, built-in or from another package.

A tool is registered under a manifest name (`database`, `calendar`, …) in the
`edgefleet.tools` entry-point group. For one agent it is built from that
agent's `tool_config` settings and offers one or more functions to the model.
Each function says whether it has side effects: the gateway retries an agent
request on another node only when no side-effecting function ran.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Where a tool instance lives: the node's data folder and the agent using it."""

    data_dir: Path
    """The node's data folder; tools keep their default stores under `data_dir/tools/`."""
    agent: str


@dataclass(frozen=True, slots=True)
class ToolFunction:
    """One function a model can call."""

    name: str
    """As the model sees it: letters, digits and `_`, e.g. `calendar_create_event`."""
    description: str
    parameters: Mapping[str, Any]
    """JSON Schema (type object) of the arguments."""
    side_effects: bool
    """True when a call changes something outside the conversation."""
    call: Callable[[dict[str, Any]], Awaitable[str]]
    """Runs the function on already-parsed arguments; returns what the model is told.
    Raises ToolError (with a message fit for the model) when the call is refused or fails."""


class Tool(abc.ABC):
    """A named capability an agent may be allowed to use."""

    name: ClassVar[str]
    """The manifest name."""
    description: ClassVar[str]
    network: ClassVar[bool] = False
    """True when the tool reaches other hosts (only ever given to agents that list it)."""

    def __init__(self, config: Mapping[str, Any], context: ToolContext) -> None:
        """Validate `config` (raises ToolConfigError saying which setting is wrong)."""
        self.context = context

    @abc.abstractmethod
    def functions(self) -> list[ToolFunction]:
        """The functions this tool offers, with their limits applied."""

    async def close(self) -> None:  # noqa: B027 - an optional hook, not a required one
        """Release files or connections; the default has none."""
