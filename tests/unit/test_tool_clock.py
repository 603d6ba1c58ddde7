"""The time tool: the real current time, in real IANA zones."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from node_agent.errors import ToolConfigError, ToolError
from node_agent.tools.base import ToolContext, ToolFunction
from node_agent.tools.clock import TimeTool, describe_now


def call_sync(fn: ToolFunction, arguments: dict[str, Any]) -> str:
    """Run one tool function to completion (ToolFunction.call is any awaitable)."""

    async def go() -> str:
        return await fn.call(arguments)

    return asyncio.run(go())


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    return ToolContext(data_dir=tmp_path, agent="front-desk")


def now(tool: TimeTool, **arguments: Any) -> Any:
    (fn,) = tool.functions()
    return json.loads(call_sync(fn, arguments))


def test_the_default_is_utc_now(context: ToolContext) -> None:
    result = now(TimeTool({}, context))
    moment = datetime.fromisoformat(result["datetime"])
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 5
    assert result["timezone"] == "UTC"
    assert result["utc_offset"] == "+00:00"
    assert result["weekday"] == moment.strftime("%A")
    assert result["date"] == moment.date().isoformat()


def test_a_zone_can_be_asked_for(context: ToolContext) -> None:
    result = now(TimeTool({"timezone": "Europe/Paris"}, context), timezone="Asia/Tokyo")
    moment = datetime.fromisoformat(result["datetime"])
    assert result["timezone"] == "Asia/Tokyo"
    assert result["utc_offset"] == "+09:00"
    assert moment.utcoffset() == datetime.now(ZoneInfo("Asia/Tokyo")).utcoffset()
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 5


def test_the_configured_zone_is_the_default(context: ToolContext) -> None:
    tool = TimeTool({"timezone": "America/Sao_Paulo"}, context)
    assert now(tool)["timezone"] == "America/Sao_Paulo"
    assert "America/Sao_Paulo" in tool.functions()[0].description


def test_daylight_saving_is_applied() -> None:
    paris = ZoneInfo("Europe/Paris")
    summer = describe_now(paris, datetime(2030, 7, 2, 7, 30, 15, 999, tzinfo=UTC))
    assert summer == {
        "datetime": "2030-07-02T09:30:15+02:00",
        "date": "2030-07-02",
        "time": "09:30:15",
        "weekday": "Tuesday",
        "timezone": "Europe/Paris",
        "utc_offset": "+02:00",
    }
    winter = describe_now(paris, datetime(2030, 1, 1, 23, 30, tzinfo=UTC))
    assert (winter["date"], winter["weekday"], winter["utc_offset"]) == (
        "2030-01-02",
        "Wednesday",
        "+01:00",
    )


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "utc+2"])
def test_unknown_zones_are_refused_with_a_hint(context: ToolContext, zone: str) -> None:
    with pytest.raises(ToolError, match=r"unknown time zone .*use an IANA name like UTC"):
        now(TimeTool({}, context), timezone=zone)


def test_bad_settings_name_the_setting(context: ToolContext) -> None:
    with pytest.raises(ToolConfigError, match=r"tool_config\.time\.timezone: .*unknown time zone"):
        TimeTool({"timezone": "Nowhere/City"}, context)
    with pytest.raises(ToolConfigError, match=r"tool_config\.time\.zone: unknown setting"):
        TimeTool({"zone": "UTC"}, context)
