"""The calendar tool against a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from node_agent.errors import ToolConfigError, ToolError
from node_agent.tools.base import ToolContext, ToolFunction
from node_agent.tools.calendar import CalendarTool


def call_sync(fn: ToolFunction, arguments: dict[str, Any]) -> str:
    """Run one tool function to completion (ToolFunction.call is any awaitable)."""

    async def go() -> str:
        return await fn.call(arguments)

    return asyncio.run(go())


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    return ToolContext(data_dir=tmp_path, agent="front-desk")


def call(tool: CalendarTool, function: str, **arguments: Any) -> Any:
    fn = {f.name: f for f in tool.functions()}[function]
    return json.loads(call_sync(fn, arguments))


def create(tool: CalendarTool, title: str, start: str, end: str, **more: Any) -> Any:
    return call(tool, "calendar_create_event", title=title, start=start, end=end, **more)


def listed(tool: CalendarTool, start: str, end: str) -> list[str]:
    return [e["title"] for e in call(tool, "calendar_list_events", start=start, end=end)["events"]]


def test_a_created_event_comes_back_with_its_id_and_is_listed(context: ToolContext) -> None:
    tool = CalendarTool({}, context)
    event = create(
        tool,
        "Check-up: Ada",
        "2030-03-01T09:00",
        "2030-03-01T09:30",
        attendees=["ada@clinic.example", "Dr. Smith", "ada@clinic.example"],
        notes="  bring results  ",
    )
    assert event == {
        "id": 1,
        "title": "Check-up: Ada",
        "start": "2030-03-01T09:00:00+00:00",
        "end": "2030-03-01T09:30:00+00:00",
        "attendees": ["ada@clinic.example", "Dr. Smith"],
        "notes": "bring results",
    }
    assert call(tool, "calendar_list_events", start="2030-03-01", end="2030-03-01") == {
        "events": [event],
        "timezone": "UTC",
    }
    assert (context.data_dir / "tools" / "calendar.sqlite").is_file()


def test_listing_returns_overlapping_events_earliest_first(context: ToolContext) -> None:
    tool = CalendarTool({}, context)
    create(tool, "late", "2030-03-01T15:00", "2030-03-01T16:00")
    create(tool, "early", "2030-03-01T08:00", "2030-03-01T09:00")
    create(tool, "overnight", "2030-02-28T22:00", "2030-03-01T02:00")
    create(tool, "next day", "2030-03-02T08:00", "2030-03-02T09:00")
    assert listed(tool, "2030-03-01", "2030-03-01") == ["overnight", "early", "late"]
    assert listed(tool, "2030-03-01T08:30", "2030-03-01T15:00") == ["early"]
    assert listed(tool, "2030-03-01T09:00", "2030-03-01T15:00") == []
    assert listed(tool, "2030-03-02", "2030-03-05") == ["next day"]


def test_times_without_an_offset_are_in_the_calendar_time_zone(context: ToolContext) -> None:
    tool = CalendarTool({"timezone": "Europe/Paris"}, context)
    event = create(tool, "summer", "2030-07-01T09:00", "2030-07-01T10:00")
    assert event["start"] == "2030-07-01T09:00:00+02:00"
    winter = create(tool, "winter", "2030-01-10T08:00:00Z", "2030-01-10T09:00:00Z")
    assert winter["start"] == "2030-01-10T09:00:00+01:00"
    assert listed(tool, "2030-07-01T07:00Z", "2030-07-01T07:30Z") == ["summer"]


def test_events_survive_a_new_tool_instance(context: ToolContext) -> None:
    create(CalendarTool({"path": "cal.db"}, context), "kept", "2030-03-01", "2030-03-01")
    again = CalendarTool({"path": "cal.db"}, context)
    assert listed(again, "2030-03-01", "2030-03-02") == ["kept"]
    assert (context.data_dir / "cal.db").is_file()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"start": "2030-03-01T10:00", "end": "2030-03-01T09:00"}, "`end` must be after `start`"),
        ({"start": "2030-03-01T10:00", "end": "2030-03-01T10:00"}, "`end` must be after `start`"),
        ({"start": "tomorrow at 9", "end": "2030-03-01T10:00"}, "`start` is not a date or time"),
        ({"start": "2030-03-01", "end": "2030-02-30"}, "`end` is not a date or time"),
        ({"start": "2030-03-01", "end": "2030-05-01"}, "at most 31 days"),
        ({"title": "   "}, "`title` is empty"),
        ({"title": "x" * 201}, "argument `title`: .* is too long"),
        ({"attendees": "everyone"}, "argument `attendees`: 'everyone' is not of type 'array'"),
    ],
)
def test_bad_events_are_refused_with_a_reason(
    context: ToolContext, arguments: dict[str, Any], message: str
) -> None:
    tool = CalendarTool({}, context)
    full = {"title": "t", "start": "2030-03-01T09:00", "end": "2030-03-01T10:00", **arguments}
    with pytest.raises(ToolError, match=message):
        call(tool, "calendar_create_event", **full)
    assert listed(tool, "2000-01-01", "2099-12-31") == []


def test_a_list_with_end_before_start_is_refused(context: ToolContext) -> None:
    with pytest.raises(ToolError, match="`end` must be after `start`"):
        call(
            CalendarTool({}, context), "calendar_list_events", start="2030-03-02", end="2030-03-01"
        )


def test_the_per_day_limit_is_enforced(context: ToolContext) -> None:
    tool = CalendarTool({"max_events_per_day": 2, "timezone": "America/New_York"}, context)
    create(tool, "a", "2030-03-01T09:00", "2030-03-01T10:00")
    create(tool, "b", "2030-03-01T23:00", "2030-03-01T23:30")
    with pytest.raises(ToolError, match=r"full on 2030-03-01 \(2 events per day\)"):
        create(tool, "c", "2030-03-01T12:00", "2030-03-01T13:00")
    # 03:00 UTC on the 2nd is still the 1st in New York.
    with pytest.raises(ToolError, match="full on 2030-03-01"):
        create(tool, "d", "2030-03-02T03:00Z", "2030-03-02T03:30Z")
    create(tool, "e", "2030-03-02T09:00", "2030-03-02T10:00")
    assert "At most 2 events" in tool.functions()[1].description


def test_concurrent_bookings_cannot_overrun_the_per_day_limit(context: ToolContext) -> None:
    tool = CalendarTool({"max_events_per_day": 3}, context)
    fn = {f.name: f for f in tool.functions()}["calendar_create_event"]

    async def book_many() -> list[Any]:
        return await asyncio.gather(
            *(
                fn.call(
                    {"title": f"slot {i}", "start": "2030-03-01T09:00", "end": "2030-03-01T10:00"}
                )
                for i in range(12)
            ),
            return_exceptions=True,
        )

    results = asyncio.run(book_many())
    assert sum(isinstance(r, str) for r in results) == 3
    assert all(isinstance(r, ToolError) for r in results if not isinstance(r, str))
    assert len(listed(tool, "2030-03-01", "2030-03-01")) == 3


def test_an_unwritable_store_is_reported_not_raised_raw(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    tool = CalendarTool({"path": str(blocker / "cal.sqlite")}, ToolContext(tmp_path, "a"))
    with pytest.raises(ToolError, match="calendar is not available"):
        listed(tool, "2030-03-01", "2030-03-01")


@pytest.mark.parametrize(
    ("config", "setting"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"max_events_per_day": 0}, "max_events_per_day"),
        ({"path": ["a"]}, "path"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_settings_name_the_setting(
    context: ToolContext, config: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ToolConfigError, match=rf"tool_config\.calendar\.{setting}\b"):
        CalendarTool(config, context)
