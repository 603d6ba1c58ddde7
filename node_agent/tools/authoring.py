"""What a tool's author uses: settings validation, data paths, argument-checked functions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
from pydantic import BaseModel, ValidationError

from node_agent.errors import ToolConfigError, ToolError
from node_agent.tools.base import ToolContext, ToolFunction

_MAX_ERROR_CHARS = 300
"""Longest argument error a model is shown (it quotes the offending value)."""

Settings = TypeVar("Settings", bound=BaseModel)


def parse_settings(model: type[Settings], tool: str, config: Mapping[str, Any]) -> Settings:
    """Validate a tool's settings; ToolConfigError naming each wrong setting."""
    try:
        return model.model_validate(dict(config))
    except ValidationError as exc:
        known = ", ".join(model.model_fields)
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in (tool, *err["loc"]))
            if err["type"] == "extra_forbidden":
                problems.append(f"tool_config.{where}: unknown setting (known: {known})")
            else:
                problems.append(f"tool_config.{where}: {err['msg']}")
        raise ToolConfigError("; ".join(problems)) from None


def data_path(context: ToolContext, configured: str | None, default: str) -> Path:
    """A configured path, relative ones under the node's data folder; else `tools/<default>`."""
    if configured is None:
        return context.data_dir / "tools" / default
    path = Path(configured).expanduser()
    return path if path.is_absolute() else context.data_dir / path


def tool_function(
    *,
    name: str,
    description: str,
    parameters: Mapping[str, Any],
    side_effects: bool,
    run: Callable[[dict[str, Any]], Awaitable[str]],
) -> ToolFunction:
    """A ToolFunction whose arguments are checked against `parameters` before `run` sees them.

    Models get arguments wrong often; the ToolError says which one and how.
    """
    jsonschema.Draft202012Validator.check_schema(parameters)
    validator = jsonschema.Draft202012Validator(parameters)

    async def call(arguments: dict[str, Any]) -> str:
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            prefix = f"argument `{where}`: " if where else ""
            message = error.message
            if len(message) > _MAX_ERROR_CHARS:
                message = message[: _MAX_ERROR_CHARS - 1] + "…"
            raise ToolError(f"invalid arguments for {name}: {prefix}{message}")
        return await run(arguments)

    return ToolFunction(
        name=name,
        description=description,
        parameters=parameters,
        side_effects=side_effects,
        call=call,
    )
