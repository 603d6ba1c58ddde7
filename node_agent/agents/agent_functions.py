"""The functions one agent may call: checked once, offered to Agent Framework as tools,
and the check of a call's arguments against the function's schema."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import jsonschema
from agent_framework import FunctionTool

from node_agent.errors import ToolError
from node_agent.tools.base import ToolFunction

_MAX_ERROR_CHARS: Final = 300


class AgentFunctions:
    """An agent's functions by name, each with the validator of its parameters schema."""

    def __init__(self, agent: str, functions: Sequence[ToolFunction]) -> None:
        """Raises ValueError for duplicate function names or an invalid parameters schema."""
        self._functions: dict[str, ToolFunction] = {}
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        for function in functions:
            if function.name in self._functions:
                raise ValueError(f"agent {agent!r} has two functions named {function.name!r}")
            try:
                jsonschema.Draft202012Validator.check_schema(function.parameters)
            except jsonschema.SchemaError as exc:
                raise ValueError(
                    f"function {function.name!r} has an invalid parameters schema: {exc.message}"
                ) from None
            self._functions[function.name] = function
            self._validators[function.name] = jsonschema.Draft202012Validator(function.parameters)

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def __iter__(self) -> Iterator[str]:
        """The function names, in the order the agent's tools gave them."""
        return iter(self._functions)

    def __len__(self) -> int:
        return len(self._functions)

    def __getitem__(self, name: str) -> ToolFunction:
        return self._functions[name]

    def framework_tools(self) -> list[FunctionTool]:
        """Every function as an Agent Framework tool, in order."""
        return [_function_tool(function) for function in self._functions.values()]

    def argument_problem(self, name: str, arguments: Mapping[str, Any]) -> str | None:
        """Why `arguments` do not fit the function's schema, as the model will read it."""
        error = jsonschema.exceptions.best_match(self._validators[name].iter_errors(arguments))
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path)
        message = error.message  # quotes the offending value, maybe a long one
        if len(message) > _MAX_ERROR_CHARS:
            message = message[: _MAX_ERROR_CHARS - 1] + "…"
        return f"Error: invalid arguments for {name}: " + (
            f"argument `{where}`: {message}" if where else message
        )


def arguments_json(arguments: Mapping[str, Any]) -> str:
    """A call's arguments as run events report them: compact JSON."""
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"), default=str)


def _function_tool(function: ToolFunction) -> FunctionTool:
    """An Agent Framework function tool built from a name, a description and a JSON schema."""

    async def body(**arguments: Any) -> str:
        try:
            return await function.call(arguments)
        except ToolError as exc:
            # The tool explains a refusal or failure to the model, which reads it and
            # goes on; for the framework this is a result, not a crash to log.
            return f"Error: {exc}"

    return FunctionTool(
        name=function.name,
        description=function.description,
        func=body,
        input_model=dict(function.parameters),
    )
