"""The `database` tool: read-only SQL against one SQLite file.

Reading is enforced three times over, so no single mistake opens a write path:
the file is opened with `mode=ro`, the connection has `PRAGMA query_only=ON`,
and an authorizer refuses every action that is not a read. A progress handler
stops a query at the configured timeout, and only `max_rows + 1` rows are ever
fetched, so a runaway query costs the node bounded time and a bounded result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from node_agent.errors import ToolError
from node_agent.tools.authoring import data_path, parse_settings, tool_function
from node_agent.tools.base import Tool, ToolContext, ToolFunction

log = logging.getLogger(__name__)

# Small models have small contexts: one huge text cell must not fill it.
_MAX_CELL_CHARS = 2000
_MAX_SQL_CHARS = 20_000
_MAX_TABLES = 200
# VM instructions between two looks at the clock: cheap, and well under a millisecond.
_PROGRESS_STEPS = 1000

_READ_ACTIONS = frozenset({sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE})
# Pragmas that only describe the schema; every other pragma (and any pragma write) is refused.
_READ_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
_DENIED_FUNCTIONS = frozenset({"load_extension"})

_NOT_READ_ONLY = (
    "only reading is allowed: send one SELECT statement "
    "(no INSERT, UPDATE, DELETE, CREATE, ATTACH, PRAGMA or transactions)"
)


def _authorize(
    action: int, arg1: str | None, arg2: str | None, _db: str | None, _by: str | None
) -> int:
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() not in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_PRAGMAS:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _cell(value: Any) -> Any:
    """A value as JSON can carry it, cut to a size a small model can read."""
    if isinstance(value, bytes):
        return f"<blob, {len(value)} bytes>"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str) and len(value) > _MAX_CELL_CHARS:
        return value[:_MAX_CELL_CHARS] + f"… ({len(value) - _MAX_CELL_CHARS} more characters)"
    return value


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    path: str | None = None
    """SQLite file; relative to the node's data folder. Default `tools/database.sqlite`."""
    max_rows: int = Field(100, ge=1, le=10_000)
    timeout: float = Field(5.0, gt=0, le=300)
    """Seconds a query may run."""


class DatabaseTool(Tool):
    """Read-only SQL over a SQLite file. Settings: `path`, `max_rows` (100), `timeout` (5 s)."""

    name = "database"
    description = "Read-only SQL queries against a local SQLite database."

    def __init__(self, config: Mapping[str, Any], context: ToolContext) -> None:
        """Validate the settings; the file is opened per call, so it may appear later."""
        super().__init__(config, context)
        self.settings = parse_settings(_Settings, self.name, config)
        self.path: Path = data_path(context, self.settings.path, "database.sqlite")

    def functions(self) -> list[ToolFunction]:
        """`database_query` and `database_schema`."""
        scalar = {"type": ["string", "number", "integer", "boolean", "null"]}
        return [
            tool_function(
                name="database_query",
                description=(
                    "Run one read-only SQL SELECT on the SQLite database and get the rows as "
                    f"JSON (at most {self.settings.max_rows}). Use ? placeholders with params."
                ),
                parameters={
                    "type": "object",
                    "properties": {
                        "sql": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": _MAX_SQL_CHARS,
                            "description": "One SELECT, e.g. SELECT * FROM t WHERE id = ?",
                        },
                        "params": {
                            "type": "array",
                            "items": scalar,
                            "maxItems": 100,
                            "description": "Values for the ? placeholders, in order",
                        },
                    },
                    "required": ["sql"],
                    "additionalProperties": False,
                },
                side_effects=False,
                run=self._query_call,
            ),
            tool_function(
                name="database_schema",
                description="List the database's tables and views with their columns.",
                parameters={"type": "object", "properties": {}, "additionalProperties": False},
                side_effects=False,
                run=self._schema_call,
            ),
        ]

    async def _query_call(self, arguments: dict[str, Any]) -> str:
        # The thread outlives a cancelled call at most until the progress handler stops it.
        return await asyncio.to_thread(self.query, arguments["sql"], arguments.get("params", []))

    async def _schema_call(self, arguments: dict[str, Any]) -> str:
        return await asyncio.to_thread(self.schema)

    def query(self, sql: str, params: Sequence[Any] = ()) -> str:
        """Run one read-only statement (blocking); the rows as compact JSON."""
        if not sql.strip():
            raise ToolError("sql is empty: send one SELECT statement")
        limit = self.settings.max_rows
        conn = self._connect()
        try:
            conn.set_authorizer(_authorize)
            cursor = conn.execute(sql, tuple(params))
            rows = cursor.fetchmany(limit + 1)
            columns = [d[0] for d in cursor.description or ()]
        except (sqlite3.Error, sqlite3.Warning) as exc:
            raise self._explain(exc) from None
        finally:
            conn.close()
        result: dict[str, Any] = {
            "columns": columns,
            "rows": [[_cell(v) for v in row] for row in rows[:limit]],
            "row_count": min(len(rows), limit),
        }
        if len(rows) > limit:
            result["truncated"] = True
            result["note"] = (
                f"only the first {limit} rows are shown; add WHERE or LIMIT to narrow the query"
            )
        return _compact(result)

    def schema(self) -> str:
        """Tables and views with their columns (blocking), as compact JSON."""
        conn = self._connect()
        try:
            found = conn.execute(
                "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            ).fetchall()
            tables = [
                {"name": name, "type": kind, "columns": self._columns(conn, name)}
                for name, kind in found[:_MAX_TABLES]
            ]
        except sqlite3.Error as exc:
            raise self._explain(exc) from None
        finally:
            conn.close()
        result: dict[str, Any] = {"tables": tables}
        if len(found) > _MAX_TABLES:
            result["note"] = f"only the first {_MAX_TABLES} of {len(found)} tables are listed"
        return _compact(result)

    @staticmethod
    def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
        try:
            info = conn.execute(
                'SELECT name, type, "notnull", pk FROM pragma_table_info(?)', (table,)
            ).fetchall()
        except sqlite3.OperationalError:
            # A view over a dropped table cannot be described; list it without columns.
            return []
        return [
            " ".join(
                part
                for part in (name, kind, "NOT NULL" if notnull else "", "PRIMARY KEY" if pk else "")
                if part
            )
            for name, kind, notnull, pk in info
        ]

    def _connect(self) -> sqlite3.Connection:
        if not self.path.is_file():
            log.warning(
                "database file missing", extra={"agent": self.context.agent, "path": str(self.path)}
            )
            raise ToolError("the database is not available right now")
        timeout = self.settings.timeout
        try:
            conn = sqlite3.connect(
                self.path.resolve().as_uri() + "?mode=ro",
                uri=True,
                timeout=timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            log.warning(
                "cannot open database",
                extra={"agent": self.context.agent, "path": str(self.path), "error": str(exc)},
            )
            raise ToolError("the database is not available right now") from None
        try:
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            conn.close()
            raise self._explain(exc) from None
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        deadline = time.monotonic() + timeout
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), _PROGRESS_STEPS)
        return conn

    def _explain(self, exc: sqlite3.Error | sqlite3.Warning) -> ToolError:
        """What the model is told about a failed statement."""
        text = str(exc)
        # Primary result code: extended codes (SQLITE_READONLY_*) keep it in the low byte.
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        # A denial found while parsing comes back as a plain SQLITE_ERROR, hence the text too.
        denied = text.startswith(("not authorized", "authorization denied"))
        if denied or code in (sqlite3.SQLITE_AUTH, sqlite3.SQLITE_READONLY):
            return ToolError(_NOT_READ_ONLY)
        if code == sqlite3.SQLITE_INTERRUPT:
            log.info(
                "query stopped at its timeout",
                extra={"agent": self.context.agent, "timeout": self.settings.timeout},
            )
            return ToolError(
                f"the query ran longer than {self.settings.timeout:g} s and was stopped; "
                "narrow it with WHERE or LIMIT"
            )
        if "one statement at a time" in text:
            return ToolError("send exactly one SQL statement (no `;` between statements)")
        return ToolError(f"SQL error: {text}")
