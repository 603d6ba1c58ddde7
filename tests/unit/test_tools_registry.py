"""The tool registry: discovery from entry points, building per agent, and the allow-list."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from node_agent.errors import ToolConfigError, ToolError, ToolNotAllowed
from node_agent.tools import registry
from node_agent.tools.authoring import tool_function
from node_agent.tools.base import Tool, ToolContext, ToolFunction
from node_agent.tools.calendar import CalendarTool
from node_agent.tools.clock import TimeTool
from node_agent.tools.database import DatabaseTool
from node_agent.tools.email import EmailTool
from node_agent.tools.registry import (
    TOOL_ENTRY_POINT_GROUP,
    AllowList,
    available_tools,
    build_tools,
)
from orchestrator.manifest.checks import known_tool_names

BUILTINS = {
    "database": DatabaseTool,
    "calendar": CalendarTool,
    "email": EmailTool,
    "time": TimeTool,
}


class CrashingTool(Tool):
    """A third-party tool whose constructor fails in an unplanned way."""

    name = "crashing"
    description = "fails to start"

    def __init__(self, config: Mapping[str, Any], context: ToolContext) -> None:
        super().__init__(config, context)
        raise RuntimeError("driver missing")

    def functions(self) -> list[ToolFunction]:
        return []


def call_sync(fn: ToolFunction, arguments: dict[str, Any]) -> str:
    """Run one tool function to completion (ToolFunction.call is any awaitable)."""

    async def go() -> str:
        return await fn.call(arguments)

    return asyncio.run(go())


@pytest.fixture(autouse=True)
def fresh_discovery() -> Iterator[None]:
    registry._discover.cache_clear()
    yield
    registry._discover.cache_clear()


@pytest.fixture
def context(tmp_path: Path) -> ToolContext:
    return ToolContext(data_dir=tmp_path, agent="front-desk")


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, *specs: tuple[str, str]) -> None:
    points = [EntryPoint(name, value, TOOL_ENTRY_POINT_GROUP) for name, value in specs]
    monkeypatch.setattr(registry, "entry_points", lambda group: points)


def test_builtin_tools_are_discovered_from_entry_points() -> None:
    found = available_tools()
    assert {name: found[name] for name in BUILTINS} == BUILTINS


def test_discovered_names_are_names_the_manifest_validator_accepts() -> None:
    assert set(available_tools()) <= known_tool_names()


def test_available_tools_returns_a_copy() -> None:
    available_tools().clear()
    assert "time" in available_tools()


def test_broken_entry_points_are_logged_and_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_entry_points(
        monkeypatch,
        ("broken", "edgefleet_no_such_module:Tool"),
        ("notatool", "json:dumps"),
        ("misnamed", "node_agent.tools.clock:TimeTool"),
        ("time", "node_agent.tools.clock:TimeTool"),
        ("time", "node_agent.tools.calendar:CalendarTool"),
    )
    with caplog.at_level(logging.WARNING, logger="node_agent.tools.registry"):
        assert available_tools() == {"time": TimeTool}
    skipped = {record.__dict__["tool"] for record in caplog.records}
    assert skipped == {"broken", "notatool", "misnamed", "time"}
    broken = next(r for r in caplog.records if r.__dict__["tool"] == "broken")
    assert "edgefleet_no_such_module" in broken.__dict__["error"]


def test_build_tools_builds_exactly_the_listed_tools(context: ToolContext) -> None:
    tools = build_tools(
        ["time", "database", "time"], {"database": {"max_rows": 5}, "time": None}, context
    )
    assert [type(t) for t in tools] == [TimeTool, DatabaseTool]
    assert all(t.context == context for t in tools)


def test_unknown_tool_is_a_config_error_naming_it(context: ToolContext) -> None:
    with pytest.raises(ToolConfigError, match=r"unknown tool `shell`.*calendar, database"):
        build_tools(["time", "shell"], {}, context)


def test_bad_settings_name_the_setting(context: ToolContext) -> None:
    with pytest.raises(ToolConfigError, match=r"tool_config\.database\.max_rows"):
        build_tools(["database"], {"database": {"max_rows": 0}}, context)
    with pytest.raises(ToolConfigError, match=r"tool_config\.database\.rows: unknown setting"):
        build_tools(["database"], {"database": {"rows": 5}}, context)
    with pytest.raises(ToolConfigError, match=r"tool_config\.time: must be a mapping"):
        build_tools(["time"], {"time": "UTC"}, context)  # type: ignore[dict-item]


def test_settings_for_a_tool_the_agent_does_not_list_are_refused(context: ToolContext) -> None:
    with pytest.raises(ToolConfigError, match=r"does not list tool `email`"):
        build_tools(["time"], {"email": {"from_address": "a@b.example"}}, context)


def test_a_crashing_third_party_tool_becomes_a_tool_error(
    monkeypatch: pytest.MonkeyPatch, context: ToolContext
) -> None:
    fake_entry_points(monkeypatch, ("crashing", f"{__name__}:CrashingTool"))
    with pytest.raises(ToolError, match=r"tool `crashing` failed to start: driver missing"):
        build_tools(["crashing"], {}, context)


def test_allow_list_offers_and_runs_only_the_listed_tools(
    context: ToolContext, caplog: pytest.LogCaptureFixture
) -> None:
    # The calendar is built (say, for another agent on the node) but this agent lists only time.
    tools = [TimeTool({}, context), CalendarTool({}, context)]
    allow = AllowList("front-desk", ["time"], tools)
    assert [fn.name for fn in allow.functions] == ["time_now"]
    assert allow.allows("time_now")
    assert not allow.allows("calendar_create_event")
    assert '"weekday"' in asyncio.run(allow.call("time_now", {}))

    with caplog.at_level(logging.WARNING, logger="node_agent.tools.registry"):
        with pytest.raises(ToolNotAllowed, match=r"`calendar_create_event` is not a function"):
            asyncio.run(
                allow.call(
                    "calendar_create_event",
                    {"title": "x", "start": "2030-01-01T09:00", "end": "2030-01-01T10:00"},
                )
            )
        with pytest.raises(ToolNotAllowed, match=r"your functions are: time_now"):
            allow.get("shell_exec")
    refusals = [r.__dict__ for r in caplog.records if r.getMessage() == "tool call refused"]
    assert [(r["agent"], r["function"], r["tool"]) for r in refusals] == [
        ("front-desk", "calendar_create_event", "calendar"),
        ("front-desk", "shell_exec", None),
    ]
    assert not (context.data_dir / "tools" / "calendar.sqlite").exists()


def test_two_tools_offering_one_function_name_are_refused(context: ToolContext) -> None:
    with pytest.raises(ToolConfigError, match=r"both offer function `time_now`"):
        AllowList("a", ["time"], [TimeTool({}, context), TimeTool({}, context)])


def test_builtin_function_schemas_are_valid_json_schema(context: ToolContext) -> None:
    tools = build_tools(list(BUILTINS), {}, context)
    functions = {fn.name: fn for tool in tools for fn in tool.functions()}
    assert {name: fn.side_effects for name, fn in functions.items()} == {
        "database_query": False,
        "database_schema": False,
        "calendar_list_events": False,
        "calendar_create_event": True,
        "email_send": True,
        "time_now": False,
    }
    for fn in functions.values():
        jsonschema.Draft202012Validator.check_schema(fn.parameters)
        assert fn.parameters["type"] == "object"
        assert fn.parameters["additionalProperties"] is False
        assert fn.description


def test_arguments_are_checked_against_the_schema(context: ToolContext) -> None:
    (time_now,) = TimeTool({}, context).functions()
    with pytest.raises(ToolError, match=r"invalid arguments for time_now: .*'tz' was unexpected"):
        call_sync(time_now, {"tz": "UTC"})
    (query, _) = DatabaseTool({}, context).functions()
    with pytest.raises(ToolError, match=r"argument `sql`: 5 is not of type 'string'"):
        call_sync(query, {"sql": 5})
    with pytest.raises(ToolError, match=r"'sql' is a required property"):
        call_sync(query, {})


def test_an_invalid_function_schema_is_caught_when_the_function_is_made() -> None:
    async def run(arguments: dict[str, Any]) -> str:
        return ""

    with pytest.raises(jsonschema.SchemaError):
        tool_function(
            name="f", description="d", parameters={"type": "objekt"}, side_effects=False, run=run
        )
