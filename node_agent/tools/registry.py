"""Finding tools, building them for an agent, and holding each agent to its list.

Tools come from the `edgefleet.tools` entry-point group, the same group the
manifest validator reads, so a name the controller accepts is a name the node
can build. A tool package that fails to import is logged and left out: one
broken plug-in must not take the node's other agents down with it.

The helpers at the end (`parse_settings`, `data_path`, `tool_function`) are what
every tool needs to turn `tool_config` and model arguments into checked values
with messages a person, or a model, can act on.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

from node_agent.errors import ToolConfigError, ToolError, ToolNotAllowed
from node_agent.tools.base import Tool, ToolContext, ToolFunction

log = logging.getLogger(__name__)

TOOL_ENTRY_POINT_GROUP = "edgefleet.tools"

# What the OpenAI tools API accepts as a function name.
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


@functools.cache
def _discover() -> Mapping[str, type[Tool]]:
    found: dict[str, type[Tool]] = {}
    for ep in entry_points(group=TOOL_ENTRY_POINT_GROUP):
        where = {"tool": ep.name, "entry_point": ep.value}
        if ep.name in found:
            log.warning("tool registered twice; keeping the first", extra=where)
            continue
        try:
            loaded = ep.load()
        except Exception as exc:
            log.error("cannot load tool; skipping it", extra={**where, "error": repr(exc)})
            continue
        if not (isinstance(loaded, type) and issubclass(loaded, Tool)):
            log.error("entry point is not a Tool subclass; skipping it", extra=where)
            continue
        if getattr(loaded, "name", None) != ep.name:
            # One name everywhere: the manifest, the allow-list and the logs.
            log.error(
                "tool class name differs from its entry-point name; skipping it",
                extra={**where, "class_name": getattr(loaded, "name", None)},
            )
            continue
        found[ep.name] = loaded
    return found


def available_tools() -> dict[str, type[Tool]]:
    """Every loadable tool by manifest name (discovered once per process)."""
    return dict(_discover())


def build_tools(
    names: Iterable[str],
    tool_config: Mapping[str, Mapping[str, Any] | None],
    context: ToolContext,
) -> list[Tool]:
    """Build the tools an agent lists, each from its `tool_config` settings.

    Raises ToolConfigError for an unknown tool, settings for a tool the agent does
    not list, or invalid settings; ToolError when a tool fails to start.
    """
    wanted = list(dict.fromkeys(names))
    known = available_tools()
    for tool_name in wanted:
        if tool_name not in known:
            raise ToolConfigError(
                f"unknown tool `{tool_name}` for agent `{context.agent}`; "
                f"this node has: {', '.join(sorted(known)) or 'no tools'} "
                "(a tool that failed to load is named in the node log)"
            )
    for tool_name in tool_config:
        if tool_name not in wanted:
            raise ToolConfigError(
                f"tool_config.{tool_name}: agent `{context.agent}` does not list tool "
                f"`{tool_name}`; add it to the agent's tools or remove its settings"
            )
    built: list[Tool] = []
    for tool_name in wanted:
        settings = tool_config.get(tool_name) or {}
        if not isinstance(settings, Mapping):
            raise ToolConfigError(f"tool_config.{tool_name}: must be a mapping of settings")
        try:
            built.append(known[tool_name](settings, context))
        except ToolError:
            raise
        except Exception as exc:
            # A third-party constructor may raise anything; the node reports it, not crashes.
            raise ToolError(f"tool `{tool_name}` failed to start: {exc}") from exc
    return built


class AllowList:
    """The functions one agent may call: those of the tools its manifest lists, nothing else."""

    def __init__(self, agent: str, allowed_tools: Iterable[str], tools: Iterable[Tool]) -> None:
        """Index the functions of `tools` whose tool is in `allowed_tools`.

        Raises ToolConfigError when two tools offer the same function name or a
        name a model cannot call.
        """
        self.agent = agent
        self.allowed_tools = frozenset(allowed_tools)
        self._functions: dict[str, ToolFunction] = {}
        self._owner: dict[str, str] = {}
        for tool in tools:
            for fn in tool.functions():
                if not _FUNCTION_NAME.match(fn.name):
                    raise ToolConfigError(
                        f"tool `{tool.name}` offers function `{fn.name}`, "
                        "whose name is not 1-64 letters, digits or `_`"
                    )
                if fn.name in self._owner:
                    raise ToolConfigError(
                        f"tools `{self._owner[fn.name]}` and `{tool.name}` "
                        f"both offer function `{fn.name}`"
                    )
                self._owner[fn.name] = tool.name
                if tool.name in self.allowed_tools:
                    self._functions[fn.name] = fn

    @property
    def functions(self) -> list[ToolFunction]:
        """The functions to offer the model, in tool order."""
        return list(self._functions.values())

    def allows(self, function: str) -> bool:
        """Whether the agent may call `function`."""
        return function in self._functions

    def get(self, function: str) -> ToolFunction:
        """The allowed function named `function`; ToolNotAllowed (logged) for anything else."""
        fn = self._functions.get(function)
        if fn is not None:
            return fn
        log.warning(
            "tool call refused",
            extra={"agent": self.agent, "function": function, "tool": self._owner.get(function)},
        )
        offered = ", ".join(self._functions) or "none"
        raise ToolNotAllowed(
            f"`{function}` is not a function you can call; your functions are: {offered}"
        )

    async def call(self, function: str, arguments: dict[str, Any]) -> str:
        """Run an allowed function; ToolNotAllowed for any other name."""
        return await self.get(function).call(arguments)
