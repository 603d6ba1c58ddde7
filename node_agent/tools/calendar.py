"""The `calendar` tool: events in a local SQLite store, listed and booked by agents.

Instants are stored as Unix seconds so overlap and per-day checks are plain
integer comparisons; they are shown to the model in the calendar's time zone.
A date without a time means the whole day: as a start, its first moment; as an
end, its last (so listing `2025-03-01` to `2025-03-01` gives that day).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from node_agent.errors import ToolError
from node_agent.tools.authoring import data_path, parse_settings, tool_function
from node_agent.tools.base import Tool, ToolContext, ToolFunction
from node_agent.tools.clock import parse_zone

log = logging.getLogger(__name__)

MAX_TITLE_CHARS = 200
MAX_NOTES_CHARS = 2000
MAX_ATTENDEES = 50
MAX_EVENT_DAYS = 31
"""Longer events are almost always a mistaken date, so they are refused."""
MAX_LISTED = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    attendees TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_start ON events (starts_at);
"""

_TIME_HELP = "use ISO 8601, e.g. 2025-03-01 or 2025-03-01T09:30"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    path: str | None = None
    """SQLite file; relative to the node's data folder. Default `tools/calendar.sqlite`."""
    timezone: str = "UTC"
    """Zone of times given without an offset, and of the times shown."""
    max_events_per_day: int | None = Field(None, ge=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        parse_zone(value)
        return value


def parse_instant(text: str, zone: ZoneInfo, *, argument: str, end: bool = False) -> datetime:
    """An ISO 8601 date or date-time as an aware datetime; a bare date is a whole day."""
    text = text.strip()
    try:
        if "T" not in text.upper() and ":" not in text:
            day = date.fromisoformat(text)
            first = datetime(day.year, day.month, day.day, tzinfo=zone)
            return first + timedelta(days=1) if end else first
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise ToolError(
            f"`{argument}` is not a date or time ({text[:40]!r}); {_TIME_HELP}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


class CalendarTool(Tool):
    """A local calendar. Settings: `path`, `timezone` (UTC), `max_events_per_day` (no limit)."""

    name = "calendar"
    description = "List and create events in a local calendar."

    def __init__(self, config: Mapping[str, Any], context: ToolContext) -> None:
        """Validate the settings; the store is created on first use."""
        super().__init__(config, context)
        self.settings = parse_settings(_Settings, self.name, config)
        self.zone = parse_zone(self.settings.timezone)
        self.path: Path = data_path(context, self.settings.path, "calendar.sqlite")

    def functions(self) -> list[ToolFunction]:
        """`calendar_list_events` and `calendar_create_event`."""
        when = f"ISO 8601 date or date-time; without an offset it is in {self.zone.key}"
        limit = self.settings.max_events_per_day
        return [
            tool_function(
                name="calendar_list_events",
                description="List calendar events that overlap a period, earliest first.",
                parameters={
                    "type": "object",
                    "properties": {
                        "start": {"type": "string", "description": f"Period start, {when}"},
                        "end": {
                            "type": "string",
                            "description": f"Period end, {when}; a date includes that whole day",
                        },
                    },
                    "required": ["start", "end"],
                    "additionalProperties": False,
                },
                side_effects=False,
                run=self._list_call,
            ),
            tool_function(
                name="calendar_create_event",
                description="Create a calendar event and get it back with its id."
                + (f" At most {limit} events can start on one day." if limit else ""),
                parameters={
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS},
                        "start": {"type": "string", "description": f"Event start, {when}"},
                        "end": {"type": "string", "description": f"Event end, after start, {when}"},
                        "attendees": {
                            "type": "array",
                            "items": {"type": "string", "minLength": 1, "maxLength": 200},
                            "maxItems": MAX_ATTENDEES,
                            "description": "Names or email addresses (optional)",
                        },
                        "notes": {"type": "string", "maxLength": MAX_NOTES_CHARS},
                    },
                    "required": ["title", "start", "end"],
                    "additionalProperties": False,
                },
                side_effects=True,
                run=self._create_call,
            ),
        ]

    async def _list_call(self, arguments: dict[str, Any]) -> str:
        start = parse_instant(arguments["start"], self.zone, argument="start")
        end = parse_instant(arguments["end"], self.zone, argument="end", end=True)
        if end <= start:
            raise ToolError("`end` must be after `start`")
        return await asyncio.to_thread(self.list_events, start, end)

    async def _create_call(self, arguments: dict[str, Any]) -> str:
        title = arguments["title"].strip()
        if not title:
            raise ToolError("`title` is empty")
        start = parse_instant(arguments["start"], self.zone, argument="start")
        end = parse_instant(arguments["end"], self.zone, argument="end", end=True)
        if end <= start:
            raise ToolError("`end` must be after `start`")
        if end - start > timedelta(days=MAX_EVENT_DAYS):
            raise ToolError(f"an event may last at most {MAX_EVENT_DAYS} days; check the dates")
        attendees = list(dict.fromkeys(a.strip() for a in arguments.get("attendees", [])))
        notes = arguments.get("notes", "").strip()
        return await asyncio.to_thread(self.create_event, title, start, end, attendees, notes)

    def list_events(self, start: datetime, end: datetime) -> str:
        """Events overlapping [start, end) (blocking), as compact JSON."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM events WHERE starts_at < ? AND ends_at > ? "
                "ORDER BY starts_at, id LIMIT ?",
                (_unix(end), _unix(start), MAX_LISTED + 1),
            ).fetchall()
        result: dict[str, Any] = {
            "events": [self._event(row) for row in rows[:MAX_LISTED]],
            "timezone": self.zone.key,
        }
        if len(rows) > MAX_LISTED:
            result["note"] = (
                f"only the first {MAX_LISTED} events are listed; ask for a shorter period"
            )
        return json.dumps(result, separators=(",", ":"), ensure_ascii=False)

    def create_event(
        self, title: str, start: datetime, end: datetime, attendees: list[str], notes: str
    ) -> str:
        """Store an event (blocking), enforcing the per-day limit; the event as compact JSON."""
        with self._connect() as conn:
            # IMMEDIATE takes the write lock first, so two bookings cannot both pass the limit.
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_day_limit(conn, start)
                cursor = conn.execute(
                    "INSERT INTO events (title, starts_at, ends_at, attendees, notes, "
                    "created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        title,
                        _unix(start),
                        _unix(end),
                        json.dumps(attendees, ensure_ascii=False),
                        notes,
                        self.context.agent,
                        int(time.time()),
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            row = conn.execute("SELECT * FROM events WHERE id = ?", (cursor.lastrowid,)).fetchone()
        log.info(
            "calendar event created", extra={"agent": self.context.agent, "event_id": row["id"]}
        )
        return json.dumps(self._event(row), separators=(",", ":"), ensure_ascii=False)

    def _check_day_limit(self, conn: sqlite3.Connection, start: datetime) -> None:
        limit = self.settings.max_events_per_day
        if limit is None:
            return
        day = start.astimezone(self.zone).date()
        first = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        next_day = first + timedelta(days=1)
        (count,) = conn.execute(
            "SELECT count(*) FROM events WHERE starts_at >= ? AND starts_at < ?",
            (_unix(first), _unix(next_day)),
        ).fetchone()
        if count >= limit:
            raise ToolError(
                f"the calendar is full on {day.isoformat()} ({limit} events per day); "
                "choose another day"
            )

    def _event(self, row: sqlite3.Row) -> dict[str, Any]:
        def shown(seconds: int) -> str:
            return datetime.fromtimestamp(seconds, self.zone).isoformat()

        event: dict[str, Any] = {
            "id": row["id"],
            "title": row["title"],
            "start": shown(row["starts_at"]),
            "end": shown(row["ends_at"]),
        }
        attendees = json.loads(row["attendees"])
        if attendees:
            event["attendees"] = attendees
        if row["notes"]:
            event["notes"] = row["notes"]
        return event

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call; creates the file and table on first use."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._unavailable(exc) from None
        try:
            conn.row_factory = sqlite3.Row
            conn.executescript(_SCHEMA)
            yield conn
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        finally:
            conn.close()

    def _unavailable(self, exc: Exception) -> ToolError:
        log.error(
            "calendar store unavailable",
            extra={"agent": self.context.agent, "path": str(self.path), "error": str(exc)},
        )
        return ToolError("the calendar is not available right now; try again later")
