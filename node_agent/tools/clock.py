"""The `time` tool: today's date and the time, in a named IANA time zone.

Small models have no idea what day it is; one call answers "is the clinic open
now?" or "book it for next Tuesday" without guessing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator

from node_agent.errors import ToolError
from node_agent.tools.authoring import parse_settings, tool_function
from node_agent.tools.base import Tool, ToolContext, ToolFunction


def parse_zone(name: str) -> ZoneInfo:
    """The IANA zone called `name` (e.g. `Europe/Paris`); ValueError saying how to fix it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # ZoneInfo raises ValueError for keys that are not paths (`../x`, absolute paths).
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name like UTC or Europe/Paris"
        ) from None


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "UTC"
    """The zone used when the model does not name one."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        parse_zone(value)
        return value


def describe_now(zone: ZoneInfo, now: datetime | None = None) -> dict[str, str]:
    """`now` (default: this instant) in `zone`, as the fields the model is told."""
    local = (now or datetime.now(zone)).astimezone(zone).replace(microsecond=0)
    return {
        "datetime": local.isoformat(),
        "date": local.date().isoformat(),
        "time": local.strftime("%H:%M:%S"),
        "weekday": local.strftime("%A"),
        "timezone": zone.key,
        "utc_offset": local.isoformat()[len("YYYY-MM-DDTHH:MM:SS") :],
    }


class TimeTool(Tool):
    """The current date, time and weekday. Settings: `timezone` (IANA name, default UTC)."""

    name = "time"
    description = "Current date, time and weekday in a time zone."

    def __init__(self, config: Mapping[str, Any], context: ToolContext) -> None:
        """Validate the settings; ToolConfigError names a wrong one."""
        super().__init__(config, context)
        self.settings = parse_settings(_Settings, self.name, config)
        self.zone = parse_zone(self.settings.timezone)

    def functions(self) -> list[ToolFunction]:
        """`time_now`."""
        return [
            tool_function(
                name="time_now",
                description=(
                    "Get the current date, time and weekday (ISO 8601). "
                    f"Default time zone: {self.zone.key}."
                ),
                parameters={
                    "type": "object",
                    "properties": {
                        "timezone": {
                            "type": "string",
                            "description": "IANA time zone, e.g. Europe/Paris (optional)",
                        }
                    },
                    "additionalProperties": False,
                },
                side_effects=False,
                run=self._now,
            )
        ]

    async def _now(self, arguments: dict[str, Any]) -> str:
        requested = arguments.get("timezone")
        try:
            zone = parse_zone(requested) if requested else self.zone
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        return json.dumps(describe_now(zone), separators=(",", ":"))
